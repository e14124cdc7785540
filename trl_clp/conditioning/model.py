"""`SteerableModel`: a saved CLP adapter on its base model, steered per row at inference."""

from __future__ import annotations

import copy
import json
import os
from contextlib import contextmanager

import torch
from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
from peft import LoraConfig, PeftModel, get_peft_model, get_peft_model_state_dict
from peft.tuners.lora import LoraLayer
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from ..sampling import check_weights, kl_conditioning_vector
from .config import (
    CLP_CONFIG_NAME,
    ConditioningConfig,
    build_conditioned_lora_config,
    check_linear_lora_config,
    format_weighted_prompt,
    resolve_conditioned_targets,
)
from .layer import WeightConditioner, add_conditioned_output_layer, block_scale, find_conditioned_layers


def resolve_clp_file(path_or_id: str, filename: str, **hub_kwargs) -> str:
    """Path of `filename` in a local directory or a hub repository (downloaded to the cache)."""
    if os.path.isdir(path_or_id):
        path = os.path.join(path_or_id, filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{path_or_id!r} has no {filename}.")
        return path
    from huggingface_hub import hf_hub_download

    return hf_hub_download(path_or_id, filename, **hub_kwargs)


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
        conditioning_config: its metadata (objectives, variant, conditioned modules).
        tokenizer: needed by the `"prompt"` variant, which writes the weighting into the prompt text.
        conditioner: the `WeightConditioner` already attached to `model` (the trainer's); by default a new one is
            attached to the layers named in `conditioning_config`.
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
        if conditioner is None:  # a fresh model; otherwise the hooks are already attached (e.g. by the trainer)
            conditioner = WeightConditioner(conditioning_config.num_blocks or conditioning_config.num_objectives)
            if conditioning_config.conditioned_modules:
                conditioner.attach(model, conditioning_config.conditioned_modules)
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
        variant: str = "full",
        conditioned_target_modules: list[str] | None = None,
        tokenizer=None,
    ) -> SteerableModel:
        """Put a freshly initialised CLP adapter on `model` (for custom training loops, export tests, ...).

        Args:
            model: the base causal LM (modified in place by PEFT).
            objective_names: m names; the adapter gets m blocks per conditioned layer.
            peft_config: the LoRA of one objective (rank r, alpha, targets).
            variant, conditioned_target_modules: as in `MultiObjectiveConfig`.
        """
        check_linear_lora_config(peft_config)
        targets = resolve_conditioned_targets(variant, conditioned_target_modules)
        num_blocks = len(objective_names)
        peft_model = get_peft_model(model, build_conditioned_lora_config(peft_config, variant, targets, num_blocks))
        if variant == "logit":
            names = [add_conditioned_output_layer(peft_model, peft_config, num_blocks)]
        else:
            names = [] if variant == "prompt" else find_conditioned_layers(peft_model, targets)
        return cls(peft_model, ConditioningConfig(list(objective_names), variant, names, num_blocks), tokenizer)

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
                `base_model_name_or_path`.
            tokenizer: defaults to the tokenizer saved with the adapter, if any.
            **model_kwargs: passed to `AutoModelForCausalLM.from_pretrained` for the base model (e.g. `dtype`).

        Raises:
            ValueError: the directory has an adapter but no `clp_config.json`.
        """
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
        if base_model is None or isinstance(base_model, str):
            if base_model is None:
                with open(resolve_clp_file(path_or_id, "adapter_config.json")) as handle:
                    base_model = json.load(handle)["base_model_name_or_path"]
            base_model = AutoModelForCausalLM.from_pretrained(base_model, **model_kwargs)
        if tokenizer is None:
            try:
                tokenizer = AutoTokenizer.from_pretrained(path_or_id)
            except (OSError, ValueError):
                tokenizer = None
        model = PeftModel.from_pretrained(base_model, path_or_id)
        model.eval()
        return cls(model, conditioning_config, tokenizer)

    def save_pretrained(self, directory: str, **kwargs) -> None:
        """Save the adapter, its `clp_config.json` and the tokenizer (if any) to `directory`."""
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
            weights.reshape(-1, weights.size(-1)).expand(rows, -1), kl_weight.reshape(-1).expand(rows), config.min_kl_weight
        )
        return vector[0] if weights.dim() == 1 and kl_weight.dim() == 0 else vector

    @contextmanager
    def condition(self, weights, kl_weight=None, batch_size: int | None = None):
        """Condition every forward pass inside the block on `weights` (`(m,)` or `(B, m)`), cleared on exit."""
        if self.conditioning_config.variant == "prompt":
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

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask=None, weights=None, kl_weight=None, **generate_kwargs):
        """`transformers` generation with each row steered by its own weighting, in one batch.

        Args:
            input_ids: `(B, T)` left-padded prompts.
            weights: `(m,)` for every row or `(B, m)`.
            kl_weight: for models trained with KL-weight conditioning: a float or `(B,)` α per row.
            **generate_kwargs: as for `PreTrainedModel.generate`.
        """
        if weights is None:
            raise ValueError("Pass `weights=`: a steerable model needs a weighting over " f"{self.objective_names}.")
        batch_size = input_ids.size(0)
        if self.conditioning_config.variant == "prompt":
            return self._generate_with_weighted_prompts(input_ids, attention_mask, weights, **generate_kwargs)
        vector = self._row_weights(weights, kl_weight, batch_size)
        # generate() repeats each row for sampled returns or beams; the weightings must follow their rows.
        expansion = max(generate_kwargs.get("num_beams", 1), generate_kwargs.get("num_return_sequences", 1))
        with self.conditioner.condition(vector.repeat_interleave(expansion, dim=0)):
            return self.model.generate(input_ids=input_ids, attention_mask=attention_mask, **generate_kwargs)

    def _generate_with_weighted_prompts(self, input_ids, attention_mask, weights, **generate_kwargs):
        if self.tokenizer is None:
            raise ValueError("The prompting variant needs the tokenizer: pass `tokenizer=` to `from_pretrained`.")
        weights = check_weights(weights, self.conditioning_config.num_objectives)
        if weights.dim() == 1:
            weights = weights.unsqueeze(0).expand(input_ids.size(0), -1)
        mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
        prompts = [self.tokenizer.decode(ids[row_mask.bool()]) for ids, row_mask in zip(input_ids, mask, strict=True)]
        texts = [
            format_weighted_prompt(prompt, w.tolist(), self.objective_names, self.conditioning_config.prompt_template)
            for prompt, w in zip(prompts, weights, strict=True)
        ]
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True, padding_side="left").to(self.device)
        return self.model.generate(**encoded, **generate_kwargs)

    def merge(self, weights, kl_weight=None) -> PreTrainedModel:
        """A plain `transformers` model equal to this one conditioned on a single weighting.

        Each conditioned block's `lora_A` rows are scaled by `m·w_i`, then the adapter is merged into a copy of the
        base weights: `B · diag(m·w) · A = Σ_i m·w_i B_i A_i`, exact up to float rounding.
        """
        if self.conditioning_config.variant == "prompt":
            raise ValueError("A prompting-baseline model has no per-objective parameters to merge.")
        vector = self.conditioning_vector(weights, kl_weight)
        if vector.dim() != 1:
            raise ValueError("`merge` takes one weighting `(m,)`, not a batch.")
        merged = copy.deepcopy(self.model)
        output_layer = merged.get_output_embeddings()
        if isinstance(output_layer, LoraLayer) and output_layer.base_layer.weight is merged.get_input_embeddings().weight:
            # A tied output layer is the embedding matrix: merging its LoRA in place would change the embeddings too.
            output_layer.base_layer.weight = nn.Parameter(output_layer.base_layer.weight.detach().clone())
            merged.get_base_model().config.tie_word_embeddings = False
        modules = dict(merged.named_modules())
        for name in self.conditioning_config.conditioned_modules:
            layer: LoraLayer = modules[name]
            for lora_a in layer.lora_A.values():
                scale = block_scale(vector.unsqueeze(0), lora_a.weight.size(0))[0]  # (m·r,)
                lora_a.weight.data.mul_(scale.to(lora_a.weight).unsqueeze(-1))
        return merged.merge_and_unload()

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

        if self.conditioning_config.variant == "prompt":
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
        export_config.rank_pattern = {}
        export_config.alpha_pattern = {}
        os.makedirs(directory, exist_ok=True)
        export_config.save_pretrained(directory)
        save_file(exported, os.path.join(directory, "adapter_model.safetensors"), metadata={"format": "pt"})
        return directory
