"""Building and loading a conditioned model: its LoRA config, module surgery, and `SteerableModel`.

A conditioned model is built in two steps around PEFT's own: `build_conditioned_lora_config` before (the ranks of the
conditioned targets), `attach_conditioning` after (logit-CLP's output layer, the block-scaling hooks). `SteerableModel`
holds one for inference: load, steer per row, merge or export one weighting.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections import Counter
from contextlib import contextmanager

import torch
from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError
from huggingface_hub.utils import validate_repo_id
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding, PreTrainedModel

from ..gguf import check_not_gguf
from ..sampling import check_weights, kl_conditioning_vector
from .config import CLP_CONFIG_NAME, ConditioningConfig
from .layer import WeightConditioner, block_scale
from .prompts import format_weighted_prompt, tokenize_left_padded

DEFAULT_ATTENTION_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj"]


def check_linear_lora_config(peft_config: LoraConfig) -> None:
    """Reject LoRA options under which mixing the blocks' parameters is not mixing their outputs.

    Raises:
        ValueError naming the option to turn off.
    """
    if not isinstance(peft_config, LoraConfig):
        raise TypeError(
            f"CLP conditions LoRA adapters: pass a `peft.LoraConfig` as `peft_config`, got {type(peft_config).__name__}."
        )
    problems = []
    if peft_config.use_dora:
        problems.append(
            "`use_dora=True` (DoRA's magnitude normalisation is not linear in the blocks): set it to False"
        )
    if peft_config.use_rslora:
        problems.append("`use_rslora=True` (rescales by 1/sqrt(rank), which changes with m): set it to False")
    if peft_config.init_lora_weights not in (True, False, "gaussian"):
        problems.append(
            f"`init_lora_weights={peft_config.init_lora_weights!r}` (a data-driven init moves the base weights or "
            f"ties the blocks): use True or 'gaussian'"
        )
    if peft_config.rank_pattern or peft_config.alpha_pattern:
        problems.append("`rank_pattern`/`alpha_pattern` (trl-clp sets the ranks of conditioned layers): remove them")
    if peft_config.lora_bias:
        problems.append(
            "`lora_bias=True` (the bias of `lora_B` is not a block: exporting one weighting would rescale it, and "
            "merging needs a biased base layer, which most LLMs lack): set it to False"
        )
    if peft_config.target_parameters:
        problems.append("`target_parameters` (parameter-level LoRA has no lora_A module to condition): remove it")
    if problems:
        raise ValueError("This LoRA configuration cannot be conditioned:\n- " + "\n- ".join(problems))


def resolve_conditioned_targets(conditioning: str, conditioned_target_modules: list[str] | None) -> list[str] | None:
    """The module-name suffixes to condition; None means every LoRA target (the `"full"` default)."""
    if conditioned_target_modules is not None:
        return list(conditioned_target_modules)
    return {"attn": DEFAULT_ATTENTION_MODULES, "logit": ["lm_head"]}.get(conditioning)


def build_conditioned_lora_config(
    peft_config: LoraConfig, conditioning: str, conditioned_target_modules: list[str] | None, num_blocks: int
) -> LoraConfig:
    """Turn a per-objective LoRA configuration into the CLP one.

    Conditioned targets get rank `num_blocks · r` with the same `lora_alpha` (each block then has scale α/(m·r) and
    the conditioning multiplies it by m·w_i, see `layer.py`); the other targets stay a shared rank-r LoRA.

    Args:
        peft_config: the per-objective LoRA (rank r, alpha α, targets), validated by `check_linear_lora_config`.
        conditioning: one of `CONDITIONING_VARIANTS`.
        conditioned_target_modules: module-name suffixes to condition; None means every target for `"full"`.
        num_blocks: m (+1 with KL-weight conditioning).
    """
    config = copy.deepcopy(peft_config)
    if conditioning in ("prompt", "logit"):  # logit: the output layer's blocks are added after TRL builds the model
        return config
    if conditioning == "full" and conditioned_target_modules is None:
        config.r = num_blocks * peft_config.r
        return config
    targets = config.target_modules
    if isinstance(targets, str) and targets != "all-linear":
        raise ValueError(
            f"With conditioning={conditioning!r}, give `target_modules` as a list (or 'all-linear'), not the regex "
            f"{targets!r}, so the conditioned modules can be added to it."
        )
    if isinstance(targets, (list, set, tuple)):
        config.target_modules = sorted(set(targets) | set(conditioned_target_modules))
    config.rank_pattern = dict.fromkeys(conditioned_target_modules, num_blocks * peft_config.r)
    return config


def matches_target(module_name: str, target: str) -> bool:
    """PEFT's suffix rule: `target` names the module itself or its last dotted components."""
    return module_name == target or module_name.endswith("." + target)


def find_conditioned_layers(model: nn.Module, conditioned_targets: list[str] | None) -> list[str]:
    """Names of the LoRA layers of `model` matched by `conditioned_targets` (every LoRA layer if None).

    Raises:
        ValueError listing the model's LoRA layer names when nothing matches, or when some entries of
        `conditioned_targets` match no LoRA layer (a typo would otherwise leave those modules shared, silently).
    """
    lora_names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    suffixes = sorted({n.split(".")[-1] for n in lora_names})
    if conditioned_targets is None:
        names = lora_names
        unmatched = []
    else:
        names = [n for n in lora_names if any(matches_target(n, t) for t in conditioned_targets)]
        unmatched = [t for t in conditioned_targets if not any(matches_target(n, t) for n in lora_names)]
    if not names:
        raise ValueError(
            f"No LoRA layer matches `conditioned_target_modules={conditioned_targets}`. The model's LoRA layers are "
            f"named {suffixes}: set `conditioned_target_modules` to some of them."
        )
    if unmatched:
        raise ValueError(
            f"`conditioned_target_modules` entries {unmatched} match no LoRA layer (of {conditioned_targets}). The "
            f"model's LoRA layers are named {suffixes}: remove those entries or correct their names."
        )
    return names


def add_conditioned_output_layer(peft_model: PeftModel, peft_config: LoraConfig, num_blocks: int) -> str:
    """Give the output layer a LoRA of rank `num_blocks · r` in the model's adapter (logit-CLP).

    TRL builds the PEFT model without it (it refuses adapters on `lm_head`, which its fused head would bypass), so
    it is injected afterwards into the same adapter, and the adapter's config is updated so that a saved adapter
    reloads with it.

    Returns:
        the full module name of the output layer.
    """
    adapter_name = peft_model.active_adapter
    output_layer = peft_model.get_output_embeddings()
    name = next(n for n, module in peft_model.named_modules() if module is output_layer)
    suffix = name.split(".")[-1]
    head_config = LoraConfig(
        r=num_blocks * peft_config.r,
        lora_alpha=peft_config.lora_alpha,
        lora_dropout=peft_config.lora_dropout,
        init_lora_weights=peft_config.init_lora_weights,
        target_modules=[suffix],
    )
    saved_config = peft_model.peft_config[adapter_name]
    with warnings.catch_warnings():
        # PEFT warns that the model already has an adapter: adding to it is the point. With tied embeddings it warns
        # that the output layer's LoRA is not mirrored on the input embeddings: it must not be (the conditioning
        # steers the output distribution only), and `SteerableModel.merge` unties the merged weight.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        warnings.filterwarnings("ignore", message="Model has `tie_word_embeddings=True` and a tied layer")
        inject_adapter_in_model(head_config, peft_model.get_base_model(), adapter_name=adapter_name)
    # The injection registers `head_config` under the same name in the config dict PEFT shares with the model.
    peft_model.peft_config[adapter_name] = saved_config
    targets = saved_config.target_modules
    if isinstance(targets, str):  # "all-linear" was resolved at injection; keep the resolved names
        targets = {n.split(".")[-1] for n, m in peft_model.named_modules() if isinstance(m, LoraLayer)}
    saved_config.target_modules = set(targets) | {suffix}
    saved_config.rank_pattern = {**saved_config.rank_pattern, suffix: num_blocks * peft_config.r}
    return name


def attach_conditioning(
    peft_model: PeftModel,
    peft_config: LoraConfig,
    conditioning: str,
    conditioned_targets: list[str] | None,
    num_blocks: int,
) -> WeightConditioner:
    """Finish building a conditioned model: the one place that turns a conditioning variant into conditioned layers.

    `peft_model` was built from `build_conditioned_lora_config(peft_config, ...)`, by `get_peft_model`
    (`SteerableModel.from_base_model`) or by the TRL trainer (`ConditionedTrainerMixin`). logit-CLP gets its output
    layer's blocks here (TRL refuses a LoRA on `lm_head` at build time); the prompting baseline has no conditioned
    layer.

    Args:
        peft_model: the PEFT model, modified in place for `"logit"`.
        peft_config: the LoRA of one objective.
        conditioning: one of `CONDITIONING_VARIANTS`.
        conditioned_targets: from `resolve_conditioned_targets`.
        num_blocks: m (+1 with KL-weight conditioning).

    Returns:
        a `WeightConditioner` with its hooks on the conditioned layers (`conditioned_module_names`).
    """
    conditioner = WeightConditioner(num_blocks)
    if conditioning == "logit":
        conditioner.attach(peft_model, [add_conditioned_output_layer(peft_model, peft_config, num_blocks)])
    elif conditioning != "prompt":
        conditioner.attach(peft_model, find_conditioned_layers(peft_model, conditioned_targets))
    return conditioner


def check_path_or_repo_id(path_or_id: str, what: str = "CLP model", hint: str = "") -> str:
    """`path_or_id` with `~` expanded, after checking that a local path exists.

    A string that starts with `/`, `.` or `~`, has more than one path separator, or is not a valid hub repository
    id is a local path: if it does not exist, say so here rather than let the hub client reject it as a repo id.

    Raises:
        FileNotFoundError naming the missing folder.
    """
    path = os.path.expanduser(path_or_id)
    if os.path.exists(path):
        return path
    looks_local = path_or_id.startswith(("/", ".", "~")) or path_or_id.count(os.sep) > 1
    if not looks_local:
        try:
            validate_repo_id(path_or_id)
        except HFValidationError:
            looks_local = True
    if looks_local:
        raise FileNotFoundError(
            f"The {what} folder {path_or_id!r} does not exist (resolved to {os.path.abspath(path)!r} from the working "
            f"directory {os.getcwd()!r}). Check the path, or give a hub repository id such as 'user/model'.{hint}"
        )
    return path_or_id


# How to name another base model than the one an adapter records, from Python and from the command line.
BASE_MODEL_HINT = (
    "`SteerableModel.from_pretrained(path, base_model=...)` "
    "(`--base_model` for `trl-clp evaluate`, `export` and `serve`)."
)


def resolve_recorded_base_model(recorded: str | None, adapter_path: str) -> str:
    """The base model an adapter's `base_model_name_or_path` names, usable from any working directory.

    A relative path was recorded relative to the working directory of the run that saved the adapter (the main job
    records `outputs/clp-demo/base_model`): when it does not exist from here, it is looked up from the adapter folder
    and each of its parents.

    Raises:
        ValueError: nothing was recorded (an adapter trained from an in-memory base model).
        FileNotFoundError: a recorded local path that cannot be found.
    """
    if not recorded:
        raise ValueError(
            f"The adapter in {adapter_path!r} does not record its base model (`base_model_name_or_path` is "
            f"{recorded!r}: it was trained from an in-memory model). Pass the model instance, its folder or hub id: "
            + BASE_MODEL_HINT
        )
    hint = " Or pass the base model: " + BASE_MODEL_HINT
    if os.path.isabs(recorded) or os.path.exists(recorded) or not os.path.isdir(adapter_path):
        return check_path_or_repo_id(recorded, "base model", hint)
    folder = os.path.abspath(adapter_path)
    while True:
        candidate = os.path.join(folder, recorded)
        if os.path.isdir(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return check_path_or_repo_id(recorded, "base model", hint)
        folder = parent


def absolute_if_local(path_or_id: str | None) -> str | None:
    """An existing local folder as an absolute path (loadable from any working directory); anything else as is."""
    if path_or_id and os.path.isdir(path_or_id):
        return os.path.abspath(path_or_id)
    return path_or_id


def resolve_clp_file(path_or_id: str, filename: str, **hub_kwargs) -> str:
    """Path of `filename` in a local directory or a hub repository (downloaded to the cache)."""
    if os.path.isdir(path_or_id):
        path = os.path.join(path_or_id, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path_or_id!r} has no {filename}.")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path_or_id, filename, **hub_kwargs)


def untie_adapted_weights(model: nn.Module) -> bool:
    """Give every LoRA layer's base weight its own copy when another module shares it (tied embeddings).

    Merging adds the LoRA delta to the base weight in place: on an output layer tied to the input embeddings it
    would change the embeddings too.

    Returns:
        whether any weight was untied.
    """
    owners = Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    untied = False
    for module in model.modules():
        if isinstance(module, LoraLayer):
            base_layer = module.get_base_layer()
            if owners[id(base_layer.weight)] > 1:
                base_layer.weight = nn.Parameter(base_layer.weight.detach().clone(), base_layer.weight.requires_grad)
                untied = True
    return untied


class SteerableModel(nn.Module):
    """A causal LM with a CLP adapter: one model, steered by a weighting over objectives per batch row.

    ```python
    steer = SteerableModel.from_pretrained("out")
    out = steer.generate(input_ids, attention_mask=mask, weights=torch.tensor([[1.0, 0.0], [0.3, 0.7]]))
    with steer.condition(torch.tensor([0.3, 0.7])):
        logits = steer(input_ids).logits
    plain = steer.merge(torch.tensor([0.3, 0.7]))  # a plain transformers model for that weighting
    ```

    Args:
        model: the `PeftModel` holding the CLP adapter.
        conditioning_config: its metadata (objectives, conditioning variant, conditioned modules).
        tokenizer: needed by the `"prompt"` variant, which writes the weighting into the prompt text.
        conditioner: the `WeightConditioner` of `model` (the trainer's); by default the one already attached to
            `model`, if any (so that two `SteerableModel`s over one `PeftModel` share one set of hooks), else a new
            one attached to the layers named in `conditioning_config`.
    """

    def __init__(
        self,
        model: PeftModel,
        conditioning_config: ConditioningConfig,
        tokenizer=None,
        conditioner: WeightConditioner | None = None,
    ):
        super().__init__()
        self.model = model
        self.conditioning_config = conditioning_config
        self.tokenizer = tokenizer
        if conditioner is None:  # the model's own conditioner if it has one (never a second set of hooks)
            conditioner = WeightConditioner.attached_to(model)
        num_blocks = conditioning_config.num_blocks or conditioning_config.num_objectives
        if conditioner is None:
            conditioner = WeightConditioner(num_blocks)
        if conditioner.num_blocks != num_blocks:
            raise ValueError(
                f"The model's conditioner has {conditioner.num_blocks} blocks but the conditioning config "
                f"{num_blocks}: build the SteerableModel with the config the adapter was trained with."
            )
        if conditioning_config.conditioned_modules:
            conditioner.attach(model, conditioning_config.conditioned_modules, adapter_name=model.active_adapter)
        self.conditioner = conditioner

    @property
    def objective_names(self) -> list[str]:
        return self.conditioning_config.objective_names

    @property
    def device(self) -> torch.device:
        return self.model.device

    @classmethod
    def from_base_model(
        cls,
        model: PreTrainedModel,
        objective_names: list[str],
        peft_config: LoraConfig,
        conditioning: str = "full",
        conditioned_target_modules: list[str] | None = None,
        tokenizer=None,
    ) -> SteerableModel:
        """Put a freshly initialised CLP adapter on `model` (for custom training loops, export tests, ...).

        Args:
            model: the base causal LM (modified in place by PEFT).
            objective_names: m names; the adapter gets m blocks per conditioned layer.
            peft_config: the LoRA of one objective (rank r, alpha, targets).
            conditioning, conditioned_target_modules: as in `MultiObjectiveConfig`.
        """
        check_linear_lora_config(peft_config)
        targets = resolve_conditioned_targets(conditioning, conditioned_target_modules)
        num_blocks = len(objective_names)
        lora_config = build_conditioned_lora_config(peft_config, conditioning, targets, num_blocks)
        peft_model = get_peft_model(model, lora_config)
        conditioner = attach_conditioning(peft_model, peft_config, conditioning, targets, num_blocks)
        names = list(conditioner.conditioned_module_names)
        config = ConditioningConfig(list(objective_names), conditioning, names, num_blocks)
        return cls(peft_model, config, tokenizer, conditioner)

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str,
        base_model: PreTrainedModel | str | None = None,
        tokenizer=None,
        **model_kwargs,
    ) -> SteerableModel:
        """Load a CLP adapter saved by `MultiObjectiveTrainer.save_model` from a local directory or a hub id.

        Args:
            path_or_id: directory or hub repository holding `adapter_config.json`, the adapter weights and
                `clp_config.json`.
            base_model: the base model (instance, path or hub id); defaults to the adapter's
                `base_model_name_or_path`. Give it when that base has moved, or was a GGUF file (convert it with
                `trl-clp convert-gguf` and give the converted folder).
            tokenizer: defaults to the tokenizer saved with the adapter, if any.
            **model_kwargs: passed to `AutoModelForCausalLM.from_pretrained` for the base model (e.g. `dtype`).

        A relative base-model path recorded in the adapter is also looked up from the adapter folder and its parents,
        so a model saved by a run in another working directory loads from anywhere.

        Raises:
            FileNotFoundError: `path_or_id` (or the recorded base model) is a local path that does not exist.
            ValueError: the directory has an adapter but no `clp_config.json`, the adapter does not record its base
                model and `base_model` is not given, or the base model is a GGUF file or folder.
        """
        path_or_id = check_path_or_repo_id(path_or_id)
        try:
            clp_config_path = resolve_clp_file(path_or_id, CLP_CONFIG_NAME)
        except LocalEntryNotFoundError:
            raise  # offline and not cached: huggingface_hub's own message says so
        except (FileNotFoundError, EntryNotFoundError) as error:
            raise ValueError(
                f"{path_or_id!r} has no {CLP_CONFIG_NAME}, the conditioning metadata of a CLP adapter. Save it with "
                f"`MultiObjectiveTrainer.save_model()` (or `SteerableModel.save_pretrained`); a plain PEFT adapter is "
                f"not steerable."
            ) from error
        conditioning_config = ConditioningConfig.load(clp_config_path)
        if base_model is None:
            with open(resolve_clp_file(path_or_id, "adapter_config.json")) as handle:
                recorded = json.load(handle).get("base_model_name_or_path")
            base_model = resolve_recorded_base_model(recorded, path_or_id)
        base_path = None
        if isinstance(base_model, str):
            base_path = check_path_or_repo_id(base_model, "base model")
            check_not_gguf(base_path, "base model", " Then pass the converted folder: " + BASE_MODEL_HINT)
            base_model = AutoModelForCausalLM.from_pretrained(base_path, **model_kwargs)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            except (OSError, ValueError):
                tokenizer = None
        model = PeftModel.from_pretrained(base_model, path_or_id)
        model.eval()
        if base_path is not None:  # where it was found: a later `save_pretrained` or `export_lora` points there
            model.peft_config[model.active_adapter].base_model_name_or_path = absolute_if_local(base_path)
        return cls(model, conditioning_config, tokenizer)

    def save_pretrained(self, directory: str, **kwargs) -> None:
        """Save the adapter, its `clp_config.json` and the tokenizer (if any) to `directory`."""
        config = self.model.peft_config[self.model.active_adapter]
        config.base_model_name_or_path = absolute_if_local(config.base_model_name_or_path)  # loadable from anywhere
        # The base model is reloaded from its own files: never copy a targeted output layer into the adapter.
        self.model.save_pretrained(directory, **{"save_embedding_layers": False, **kwargs})
        self.conditioning_config.save(directory)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(directory)

    def conditioning_vector(self, weights, kl_weight=None) -> torch.Tensor:
        """Validated `(B, num_blocks)` (or `(num_blocks,)`) vector for `weights` `(B, m)`/`(m,)` and optional α."""
        config = self.conditioning_config
        weights = check_weights(weights, config.num_objectives)
        if config.min_kl_weight is None:
            if kl_weight is not None:
                raise ValueError(
                    "This model was not trained with KL-weight conditioning (`kl_weights`/`kl_weight_range`): drop "
                    "`kl_weight`."
                )
            return weights
        kl_weight = torch.as_tensor(config.min_kl_weight if kl_weight is None else kl_weight, dtype=torch.float32)
        if (kl_weight < config.min_kl_weight).any():
            raise ValueError(f"`kl_weight` must be >= {config.min_kl_weight}, the smallest KL weight trained on.")
        # A single weighting may pair with one α per row, and a single α with one weighting per row.
        rows = max(weights.size(0) if weights.dim() == 2 else 1, kl_weight.numel())
        vector = kl_conditioning_vector(
            weights.reshape(-1, weights.size(-1)).expand(rows, -1),
            kl_weight.reshape(-1).expand(rows),
            config.min_kl_weight,
        )
        return vector[0] if weights.dim() == 1 and kl_weight.dim() == 0 else vector

    @contextmanager
    def condition(self, weights, kl_weight=None, batch_size: int | None = None):
        """Condition every forward pass inside the block on `weights` (`(m,)` or `(B, m)`), cleared on exit."""
        if self.conditioning_config.conditioning == "prompt":
            raise ValueError(
                "A prompting-baseline model is conditioned through its prompt: use `generate(..., weights=...)` or "
                "write the prompt with `trl_clp.format_weighted_prompt`."
            )
        with self.conditioner.condition(self.conditioning_vector(weights, kl_weight), batch_size=batch_size):
            yield

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)

    def _row_weights(self, weights, kl_weight, batch_size: int) -> torch.Tensor:
        vector = self.conditioning_vector(weights, kl_weight)
        if vector.dim() == 1:
            vector = vector.unsqueeze(0).expand(batch_size, -1)
        if vector.size(0) != batch_size:
            raise ValueError(f"Got {vector.size(0)} weightings for {batch_size} prompts: give one per row, or one.")
        return vector

    def _generation_expansion(self, generate_kwargs: dict) -> int:
        """How many output rows `generate` makes of each input row: beams or sampled returns.

        Read from the effective generation config, as `generate` does: its keyword arguments over the
        `generation_config` passed, over the model's own.
        """
        config = generate_kwargs.get("generation_config") or self.model.generation_config
        num_beams = generate_kwargs.get("num_beams", config.num_beams) or 1
        num_return_sequences = generate_kwargs.get("num_return_sequences", config.num_return_sequences) or 1
        return max(num_beams, num_return_sequences)

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask=None, weights=None, kl_weight=None, **generate_kwargs):
        """`transformers` generation with each row steered by its own weighting, in one batch.

        Safe to call from several threads or asyncio tasks at once: each call's weighting is its own.

        Args:
            input_ids: `(B, T)` left-padded prompts. For the `"prompt"` variant they are decoded (special tokens
                dropped), the weighting is written in front and the text re-tokenized as in training; prompts that
                were chat-templated must be given as conversations to `generate_from_prompts` instead.
            weights: `(m,)` for every row or `(B, m)`.
            kl_weight: for models trained with KL-weight conditioning: a float or `(B,)` α per row.
            **generate_kwargs: as for `PreTrainedModel.generate`.
        """
        if weights is None:
            raise ValueError(f"Pass `weights=`: a steerable model needs a weighting over {self.objective_names}.")
        batch_size = input_ids.size(0)
        if self.conditioning_config.conditioning == "prompt":
            return self._generate_with_weighted_prompts(input_ids, attention_mask, weights, **generate_kwargs)
        vector = self._row_weights(weights, kl_weight, batch_size)
        # generate() repeats each row for sampled returns or beams; the weightings must follow their rows.
        expansion = self._generation_expansion(generate_kwargs)
        with self.conditioner.condition(vector.repeat_interleave(expansion, dim=0)):
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)

    def _generate_with_weighted_prompts(self, input_ids, attention_mask, weights, **generate_kwargs):
        tokenizer = self._require_tokenizer()
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        rows = [ids[row_mask.bool()] for ids, row_mask in zip(input_ids, mask, strict=True)]
        # Training tokenized the weighted text, adding the tokenizer's own special tokens (BOS) once: decode without
        # them. Chat-template tokens cannot be told from text once decoded, so such ids are refused.
        allowed = {tokenizer.bos_token_id, tokenizer.pad_token_id}
        templated = sorted({t for ids in rows for t in ids.tolist() if t in tokenizer.all_special_ids} - allowed)
        if templated:
            raise ValueError(
                f"The prompt ids contain the special tokens {tokenizer.convert_ids_to_tokens(templated)}: they look "
                f"chat-templated. The prompting variant writes the weighting into the first user message, as in "
                f"training: pass the conversations to `generate_from_prompts(prompts, weights=...)`."
            )
        prompts = tokenizer.batch_decode(rows, skip_special_tokens=True)
        encoded = self.tokenize_prompts(prompts, weights)
        return self.model.generate(**encoded, **generate_kwargs)

    def _require_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError("This needs the model's tokenizer: pass `tokenizer=` to `from_pretrained`.")
        return self.tokenizer

    def tokenize_prompts(self, prompts: list, weights=None, chat_template_kwargs: dict | None = None) -> BatchEncoding:
        """Left-padded token ids of `prompts`, built exactly as `MultiObjectiveTrainer` built them for generation.

        Plain-text prompts are tokenized with the tokenizer's defaults (its BOS included), conversations with
        `apply_chat_template(add_generation_prompt=True)`, as TRL's `RLOOTrainer._tokenize_prompts` does. For the
        `"prompt"` variant the weighting is first written into each prompt with `format_weighted_prompt` (in front of
        the text, or of the first user message), as in training.

        Args:
            prompts: B strings, or B conversations (lists of `{"role", "content"}` messages).
            weights: for the `"prompt"` variant, `(m,)` for every prompt or `(B, m)`; ignored by the others.
            chat_template_kwargs: keyword arguments of `apply_chat_template`; default: the training config's,
                saved in `clp_config.json`.

        Returns:
            `input_ids` and `attention_mask`, `(B, T)` on the model's device.
        """
        tokenizer = self._require_tokenizer()
        if not prompts:
            raise ValueError("`prompts` is empty: give at least one prompt.")
        if self.conditioning_config.conditioning == "prompt":
            if weights is None:
                raise ValueError(f"Pass `weights=`: the prompt carries a weighting over {self.objective_names}.")
            weights = check_weights(weights, self.conditioning_config.num_objectives)
            if weights.dim() == 1:
                weights = weights.unsqueeze(0).expand(len(prompts), -1)
            if weights.size(0) != len(prompts):
                raise ValueError(f"Got {weights.size(0)} weightings for {len(prompts)} prompts: give one per prompt.")
            template = self.conditioning_config.prompt_template
            prompts = [
                format_weighted_prompt(prompt, w.tolist(), self.objective_names, template)
                for prompt, w in zip(prompts, weights, strict=True)
            ]
        if chat_template_kwargs is None:
            chat_template_kwargs = self.conditioning_config.chat_template_kwargs
        return tokenize_left_padded(tokenizer, prompts, chat_template_kwargs).to(self.device)

    @torch.no_grad()
    def generate_from_prompts(
        self, prompts: list, weights, kl_weight=None, chat_template_kwargs: dict | None = None, **generate_kwargs
    ) -> list[str]:
        """Complete text prompts or conversations, each steered by its weighting, with the prompts of training.

        Args:
            prompts: B strings, or B conversations (lists of `{"role", "content"}` messages).
            weights: `(m,)` for every prompt or `(B, m)`.
            kl_weight: for models trained with KL-weight conditioning: a float or `(B,)` α per prompt.
            chat_template_kwargs: keyword arguments of `apply_chat_template`; default: the training config's,
                saved in `clp_config.json`.
            **generate_kwargs: as for `PreTrainedModel.generate` (e.g. `max_new_tokens`, `do_sample`).

        Returns:
            the completions, decoded without special tokens (as TRL decodes them for the rewards): B·n strings for n
            returned sequences per prompt, grouped by prompt.
        """
        encoded = self.tokenize_prompts(prompts, weights, chat_template_kwargs)
        if self.conditioning_config.conditioning == "prompt":
            if kl_weight is not None:
                raise ValueError("A prompting-baseline model is not conditioned on the KL weight: drop `kl_weight`.")
            sequences = self.model.generate(**encoded, **generate_kwargs)
        else:
            sequences = self.generate(**encoded, weights=weights, kl_weight=kl_weight, **generate_kwargs)
        completions = sequences[:, encoded["input_ids"].size(1) :]
        return self.tokenizer.batch_decode(completions, skip_special_tokens=True)

    def merge(self, weights, kl_weight=None) -> PreTrainedModel:
        """A plain `transformers` model equal to this one conditioned on a single weighting.

        Each conditioned block's `lora_A` rows (of the active adapter) are scaled by `m·w_i`, then the adapter is
        merged into a copy of the base weights: `B · diag(m·w) · A = Σ_i m·w_i B_i A_i`, exact up to float
        rounding.
        An adapted output layer whose weight is tied to the input embeddings (`tie_word_embeddings=True`, as in
        Qwen2.5) gets its own merged weight, and the returned model's config is untied, so that the input embeddings
        keep their trained values.
        """
        if self.conditioning_config.conditioning == "prompt":
            raise ValueError("A prompting-baseline model has no per-objective parameters to merge.")
        vector = self.conditioning_vector(weights, kl_weight)
        if vector.dim() != 1:
            raise ValueError("`merge` takes one weighting `(m,)`, not a batch.")
        merged = copy.deepcopy(self.model)
        adapter_name = merged.active_adapter
        modules = dict(merged.named_modules())
        for name in self.conditioning_config.conditioned_modules:
            lora_a = modules[name].lora_A[adapter_name]  # (m·r, in); other adapters keep their own blocks
            scale = block_scale(vector.unsqueeze(0), lora_a.weight.size(0))[0]  # (m·r,)
            lora_a.weight.data.mul_(scale.to(lora_a.weight).unsqueeze(-1))
        untied = untie_adapted_weights(merged)
        with warnings.catch_warnings():  # PEFT warns that the embeddings are no longer tied: untying them is the point
            warnings.filterwarnings("ignore", message="Input and output embeddings are no longer tied")
            plain = merged.merge_and_unload()
        if untied:
            for module in plain.modules():  # the (sub)models whose config asks to re-tie on save and load
                if isinstance(module, PreTrainedModel):
                    module.config.tie_word_embeddings = False
            plain.all_tied_weights_keys = plain.get_expanded_tied_weights_keys(all_submodels=True)
        return plain

    def export_lora(self, directory: str, weights, kl_weight=None) -> str:
        """Write a plain PEFT LoRA adapter equal to this model conditioned on one weighting (for vLLM, TGI, ...).

        Every adapted layer gets the same rank R = num_blocks·r and the same `lora_alpha` α, with no rank or alpha
        pattern, the form serving engines load: conditioned layers keep their blocks with `lora_A`'s rank-block i
        scaled by `num_blocks·w_i` (the concatenated form, exact); shared rank-r layers are padded with zero blocks
        and their `lora_B` multiplied by num_blocks so that their scale α/r is unchanged. Load it with
        `PeftModel.from_pretrained(base, directory)`, or in vLLM with `max_lora_rank >= R`.

        Args:
            directory: where `adapter_config.json` and `adapter_model.safetensors` go.
            weights: one weighting `(m,)`.
            kl_weight: for models trained with KL-weight conditioning, the α to export.

        Returns:
            `directory`.
        """
        from safetensors.torch import save_file

        if self.conditioning_config.conditioning == "prompt":
            raise ValueError(
                "A prompting-baseline model has no per-objective parameters: serve its adapter as it is and write the "
                "weighting into the prompt with `trl_clp.format_weighted_prompt`."
            )
        vector = self.conditioning_vector(weights, kl_weight)
        if vector.dim() != 1:
            raise ValueError("`export_lora` takes one weighting `(m,)`, not a batch.")
        num_blocks = vector.numel()
        adapter_name = self.model.active_adapter
        # The base model is loaded from its own files: never copy a targeted output layer into the export.
        state = get_peft_model_state_dict(self.model, adapter_name=adapter_name, save_embedding_layers=False)
        conditioned = set(self.conditioning_config.conditioned_modules)
        exported = {}
        for key, tensor in state.items():
            module_name, _, suffix = key.rpartition(".lora_")
            if suffix.startswith("embedding"):
                raise ValueError(f"{key}: exporting LoRA on embedding layers is not supported.")
            tensor = tensor.detach().float()
            if suffix == "A.weight" and module_name in conditioned:  # (num_blocks·r, in)
                tensor = tensor * block_scale(vector.unsqueeze(0), tensor.size(0))[0].to(tensor).unsqueeze(-1)
            elif suffix == "A.weight":  # shared (r, in): pad to rank num_blocks·r with zero rows
                tensor = torch.cat([tensor, tensor.new_zeros((num_blocks - 1) * tensor.size(0), tensor.size(1))])
            elif suffix == "B.weight" and module_name not in conditioned:  # shared (out, r)
                # α/(num_blocks·r) · (num_blocks·B) A = α/r · B A: the shared layer's output is unchanged.
                padding = tensor.new_zeros(tensor.size(0), (num_blocks - 1) * tensor.size(1))
                tensor = torch.cat([num_blocks * tensor, padding], 1)
            exported[key] = tensor.to(state[key].dtype).contiguous()
        (export_rank,) = {t.size(0) for k, t in exported.items() if k.endswith("lora_A.weight")}
        export_config = copy.deepcopy(self.model.peft_config[adapter_name])
        export_config.r = export_rank
        export_config.base_model_name_or_path = absolute_if_local(export_config.base_model_name_or_path)
        export_config.rank_pattern = {}
        export_config.alpha_pattern = {}
        os.makedirs(directory, exist_ok=True)
        export_config.save_pretrained(directory)
        save_file(exported, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})
        return directory
