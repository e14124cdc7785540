"""`SteerableModel`: a CLP model for inference: load, steer per row, merge or export one weighting.

The counterpart of PEFT's `peft_model.py` for the conditioned adapter: it loads a saved adapter with its
`clp_config.json` (building one from a base model goes through `trl_clp.conditioning.model`), and conditions each
forward or generation on the rows' weightings. It is one class: its methods (load, save, condition, generate, merge,
export) are the ways to use one adapter and its metadata, and share them.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Sequence
from contextlib import contextmanager

import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, BatchEncoding, PreTrainedModel

from ..gguf import check_not_gguf
from ..sampling import check_weights, kl_conditioning_vector
from .config import CLP_CONFIG_NAME, ConditioningConfig
from .features import check_conditioning_features
from .layer import WeightConditioner, block_scale
from .model import (
    attach_conditioning,
    build_conditioned_lora_config,
    check_linear_lora_config,
    resolve_conditioned_targets,
    untie_adapted_weights,
)
from .paths import (
    BASE_MODEL_HINT,
    absolute_if_local,
    check_path_or_repo_id,
    resolve_clp_file,
    resolve_recorded_base_model,
)
from .prompts import format_weighted_prompt, tokenize_left_padded


@contextmanager
def _peft_reads_deprecated_names():
    """PEFT 0.21 reads `model.is_gradient_checkpointing`, which transformers 5 deprecated: the FutureWarning is about
    PEFT's code, not the user's, so loading a model does not show it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


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
        vector_size = conditioning_config.vector_size
        features = tuple(conditioning_config.conditioning_features)
        if conditioner is None:
            conditioner = WeightConditioner(vector_size, features)
        if (conditioner.vector_size, conditioner.features) != (vector_size, features):
            raise ValueError(
                f"The model's conditioner mixes {conditioner.num_blocks} blocks (features {list(conditioner.features)} "
                f"of {conditioner.vector_size} entries) but the conditioning config {list(features)} of "
                f"{vector_size}: build the SteerableModel with the config the adapter was trained with."
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
        *,
        conditioning_features: Sequence[str] = ("linear",),
        variant: str | None = None,
    ) -> SteerableModel:
        """Put a freshly initialised CLP adapter on `model` (for custom training loops, export tests, ...).

        Args:
            model: the base causal LM (modified in place by PEFT).
            objective_names: m names; the adapter gets m blocks per conditioned layer.
            peft_config: the LoRA of one objective (rank r, alpha, targets).
            conditioning, conditioned_target_modules, conditioning_features: as in `MultiObjectiveConfig`.
            variant: the former name of `conditioning`, accepted with a `FutureWarning` until the next release.
        """
        if variant is not None:
            if conditioning != "full":
                raise TypeError(
                    f"from_base_model got both conditioning={conditioning!r} and variant={variant!r}: `variant` is the "
                    "former name of `conditioning`; pass `conditioning` only."
                )
            warnings.warn(
                "`SteerableModel.from_base_model(variant=...)` is renamed `conditioning=`; the old name goes in the "
                "next release.",
                FutureWarning,
                stacklevel=2,
            )
            conditioning = variant
        check_linear_lora_config(peft_config)
        targets = resolve_conditioned_targets(conditioning, conditioned_target_modules)
        features = check_conditioning_features(conditioning_features, conditioning)
        vector_size = len(objective_names)
        lora_config = build_conditioned_lora_config(peft_config, conditioning, targets, vector_size, features)
        with _peft_reads_deprecated_names():
            peft_model = get_peft_model(model, lora_config)
        conditioner = attach_conditioning(peft_model, peft_config, conditioning, targets, vector_size, features)
        config = ConditioningConfig(
            list(objective_names),
            conditioning,
            list(conditioner.conditioned_module_names),
            conditioner.num_blocks,
            conditioning_features=list(features),
        )
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
        with _peft_reads_deprecated_names():
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
        """Validated `(B, n)` (or `(n,)`) conditioning vector for `weights` `(B, m)`/`(m,)` and optional α: the weighting
        itself, or with KL-weight conditioning the weighting and the KL entry (`kl_conditioning_vector`). The blocks
        are mixed with its features (`conditioning_config.conditioning_features`)."""
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

        Each conditioned block's `lora_A` rows (of the active adapter) are scaled by the block's coefficient `c_k`
        (`n·w_i` for a linear block, see `trl_clp.conditioning.features`), then the adapter is merged into a copy of
        the base weights: `B · diag(c) · A = Σ_k c_k B_k A_k`, exact up to float rounding.
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
            lora_a = modules[name].lora_A[adapter_name]  # (K·r, in); other adapters keep their own blocks
            scale = block_scale(vector.unsqueeze(0), lora_a.weight.size(0), self.conditioner.features)[0]  # (K·r,)
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

        Every adapted layer gets the same rank R = K·r (K blocks per conditioned layer) and the same `lora_alpha`,
        that of the conditioned layers, with no rank or alpha pattern, the form serving engines load: conditioned
        layers keep their blocks with `lora_A`'s rank-block k scaled by its coefficient `c_k` (`n·w_i` for a linear
        block; the concatenated form, exact); shared rank-r layers are padded with zero blocks and their `lora_B`
        multiplied by the ratio of their LoRA scale to the exported one, so that their output is unchanged. Load it
        with `PeftModel.from_pretrained(base, directory)`, or in vLLM with `max_lora_rank >= R`.

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
        adapter_name = self.model.active_adapter
        modules = dict(self.model.named_modules())
        conditioned = self.conditioning_config.conditioned_modules
        export_rank = modules[conditioned[0]].r[adapter_name]  # K·r
        export_alpha = modules[conditioned[0]].lora_alpha[adapter_name]  # α·K/n
        export_scaling = export_alpha / export_rank
        # The base model is loaded from its own files: never copy a targeted output layer into the export.
        state = get_peft_model_state_dict(self.model, adapter_name=adapter_name, save_embedding_layers=False)
        exported = {}
        for key, tensor in state.items():
            module_name, _, suffix = key.rpartition(".lora_")
            if suffix.startswith("embedding"):
                raise ValueError(f"{key}: exporting LoRA on embedding layers is not supported.")
            tensor = tensor.detach().float()
            if suffix == "A.weight" and module_name in conditioned:  # (K·r, in)
                scale = block_scale(vector.unsqueeze(0), tensor.size(0), self.conditioner.features)[0]  # (K·r,)
                tensor = tensor * scale.to(tensor).unsqueeze(-1)
            elif suffix == "A.weight":  # shared (r, in): pad to rank K·r with zero rows
                tensor = torch.cat([tensor, tensor.new_zeros(export_rank - tensor.size(0), tensor.size(1))])
            elif suffix == "B.weight" and module_name not in conditioned:  # shared (out, r)
                # export_scaling · (ratio·B) A = scaling · B A: the shared layer's output is unchanged.
                ratio = modules[module_name].scaling[adapter_name] / export_scaling
                padding = tensor.new_zeros(tensor.size(0), export_rank - tensor.size(1))
                tensor = torch.cat([ratio * tensor, padding], 1)
            exported[key] = tensor.to(state[key].dtype).contiguous()
        export_config = copy.deepcopy(self.model.peft_config[adapter_name])
        export_config.r = export_rank
        export_config.lora_alpha = export_alpha
        export_config.base_model_name_or_path = absolute_if_local(export_config.base_model_name_or_path)
        export_config.rank_pattern = {}
        export_config.alpha_pattern = {}
        os.makedirs(directory, exist_ok=True)
        export_config.save_pretrained(directory)
        save_file(exported, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})
        return directory
