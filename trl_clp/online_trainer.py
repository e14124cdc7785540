"""CLP training on a TRL online trainer: `ConditionedTrainerMixin`, what RLOO and GRPO both add.

`ConditionedTrainerMixin` holds what CLP adds to a TRL online trainer: the conditioning every CLP trainer shares
(`trl_clp.conditioned_trainer.ConditionedTrainerCore`: adapter, weighting draws, conditioned forwards, save/resume
metadata) plus per-group draws with the KL weight, conditioned generation, per-row rewards and their logging. A
trainer class mixes it in ahead of the TRL class and
implements one hook, `_rewards_and_advantages` (its group baseline); see `trl_clp.rloo_trainer.MultiObjectiveTrainer`
and `trl_clp.grpo_trainer.MultiObjectiveGRPOTrainer`.

The module is one class, and longer than most here because that class's overrides (generation, scoring, rewards,
logging) pass the same rows' weightings between them through one training step: split, each would need the others.
"""

from __future__ import annotations

import warnings
from collections.abc import Sized
from contextlib import nullcontext

import torch
from accelerate.utils import gather
from peft import LoraConfig
from torch import nn
from transformers.integrations.deepspeed import is_deepspeed_zero3_enabled
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    get_callable_name,
    get_config_model_id,
    nanstd,
    selective_log_softmax,
    selective_log_softmax_and_entropy,
    use_adapter,
)

from .conditioned_trainer import ConditionedTrainerCore
from .conditioning.block_signal import (
    GradientCoefficients,
    block_gradient_coefficients,
    cross_term_weight,
    objective_of_blocks,
)
from .conditioning.config import ConditioningConfig
from .conditioning.fused_head import conditioned_head_logps_and_entropies, fuses_output_layer
from .conditioning.prompts import format_weighted_prompt
from .guards import checked_reward_function
from .online_config import ConditioningFields
from .pareto import WeightRewardWindow
from .sampling import kl_conditioning_vector, sample_group_kl_weights
from .scalarization import IdealPoint, RunningMoments, scalarize_rewards


def reward_function_name(reward_func) -> str:
    """The name TRL gives a reward function (model id's last part, or the callable's name)."""
    if isinstance(reward_func, str):
        return reward_func.rstrip("/").split("/")[-1]
    if isinstance(reward_func, nn.Module):
        return get_config_model_id(reward_func.config).split("/")[-1]
    return get_callable_name(reward_func)


class ConditionedTrainerMixin(ConditionedTrainerCore):
    """
    Overrides TRL's `__init__`, `_generate`, `_calculate_rewards`, `_generate_and_score_completions`,
    `_get_per_token_logps_and_entropies` and `log` (and `compute_loss` and `training_step` once more, for
    `block_signal="own"`), and through `ConditionedTrainerCore` `train`, `training_step`,
    `compute_loss`, `prediction_step`, `evaluation_loop`, `_save` and `create_model_card`, each wrapping `super()`.

    Conditional Language Policy training (Wang et al., 2024, https://huggingface.co/papers/2407.15762) on a TRL
    online trainer: one LoRA-adapted policy π(y | x; w) for every weighting w of several reward functions. Mix it in
    ahead of the TRL trainer class (`class T(ConditionedTrainerMixin, RLOOTrainer)`); it wraps the trainer's methods
    with `super()`.

    The changes with respect to the TRL trainer are:

    1. The PEFT adapter is built from `peft_config` with one LoRA block per objective in the conditioned layers
       (`args.conditioning`), and each batch row mixes the blocks with its own weighting (see
       `trl_clp.conditioning.layer`).
    2. Each global prompt group draws its weighting w (and, with `kl_weights`/`kl_weight_range`, its KL weight α)
       from a stream seeded by `(args.seed, micro-step)`: identical on every rank and continued on resume. The rows'
       weightings travel with the rows through TRL's buffering, shuffling and splitting.
    3. Generation, old and new log-probabilities are computed with each row conditioned on its weighting; for
       `conditioning="prompt"`, the weighting is written into the generated prompt instead (reward functions
       still see the original prompt).
    4. The scalar reward is computed per row, `s(R; w) − α·KL` (`args.scalarization`), and the advantages are
       recomputed from it by the trainer's hook `_rewards_and_advantages` (TRL's fixed `reward_weights` and scalar
       `beta` are neutralised). The logged `reward`, `reward_std`, `frac_reward_zero_std`, `kl` and the completions
       table's advantages are corrected accordingly, and the weightings and the reward as a function of the
       weighting are logged.
    5. `save_model` writes `clp_config.json` (the conditioning metadata) beside the adapter; resuming checks it;
       the model card says how to steer the model and shows its evaluated front.
    6. With `block_signal="own"` (beyond the CLP paper), each objective's block learns from its own objective's
       advantage at the mixed policy, the cross terms added back over training: the loss gets a per-row advantage
       of 1 and the advantages become per-row, per-block coefficients on the LoRA parameters' gradients
       (`trl_clp.conditioning.block_signal`).
    7. Construction fails if `output_dir` cannot be written or lacks disk space for the checkpoints; a reward
       function that raises stops training with a `RewardFunctionError` naming it. With TensorBoard, W&B or trackio
       in `report_to`, the sampled weightings are logged as histograms.

    A trainer class sets `config_class` (its config, a `ConditioningFields` subclass) and implements
    `_rewards_and_advantages` and `_objective_advantages`; it may override `_policy_logps` if its TRL trainer does not always compute the old
    log-probabilities.

    Args:
        model: a model id, a local path, or a `PreTrainedModel` (not a `PeftModel`: the conditioned adapter is
            built here).
        reward_funcs: one reward function per objective, of any kind `RLOOTrainer` takes (callables, async
            callables, reward-model ids, paths or modules).
        args: the trainer's config (`config_class`); by default one with every default and
            `output_dir="<model name>-CLP"`, as TRL's trainers build their own.
        peft_config: the LoRA of ONE objective (rank, alpha, targets, dropout); default rank 8, alpha 16,
            all linear layers. DoRA, rsLoRA and data-driven inits are rejected (not linear in the blocks).
        Other arguments: as for the TRL trainer.
    """

    config_class: type = ConditioningFields

    def __init__(
        self,
        model,
        reward_funcs,
        args: ConditioningFields | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config: LoraConfig | None = None,
    ):
        args = self._default_args(model, args)
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        args.check_num_objectives(len(reward_funcs))
        names = args.objective_names or [reward_function_name(func) for func in reward_funcs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"Two reward functions are both called {duplicates}: set `objective_names` in the config to tell the "
                "objectives apart."
            )
        self._check_base_model(
            model, processing_class, quantization_config or (args.model_init_kwargs or {}).get("quantization_config")
        )
        column_names = getattr(train_dataset, "column_names", None)
        if column_names is not None and "prompt" not in column_names:
            raise ValueError(
                f"The training dataset has columns {column_names} but no 'prompt' column: rename the column holding "
                "the prompts to 'prompt' (e.g. `dataset.rename_column('text', 'prompt')`)."
            )
        if isinstance(train_dataset, Sized) and len(train_dataset) == 0:
            raise ValueError("The training dataset is empty: training would run 0 steps. Pass a dataset with prompts.")
        if args.conditioning == "logit" and is_deepspeed_zero3_enabled():
            raise ValueError(
                "conditioning='logit' scores through the output layer's weights after the model's forward, where "
                "DeepSpeed ZeRO-3 leaves them as empty partitions. Train logit-CLP with FSDP2 "
                "(examples/accelerate_configs/fsdp.yaml) or ZeRO-2, or use conditioning='attn' or 'full' under ZeRO-3."
            )
        self.objective_names = names
        self.num_objectives = len(names)
        vector_size = self.num_objectives + int(args.conditions_on_kl_weight)
        lora_config = self._conditioned_lora_config(args, peft_config, vector_size)
        reward_funcs = [
            func if isinstance(func, (str, nn.Module)) else checked_reward_function(func, name)
            for func, name in zip(reward_funcs, names, strict=True)
        ]

        super().__init__(
            model=model,
            reward_funcs=reward_funcs,
            args=args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            reward_processing_classes=reward_processing_classes,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=lora_config,
        )

        # The scalar reward and KL penalty are per row (see `_generate_and_score_completions`); TRL's own
        # computation runs with unit weights and no KL so that it costs no reference forward pass. `beta` is TRL's
        # name for the KL weight α: from here on it is `kl_weight`, as everywhere else in trl-clp.
        self.kl_weight = self.beta
        self.beta = 0.0
        self.reward_weights = torch.ones(self.num_objectives)

        self._attach_conditioning()
        self.gradient_coefficients = self._attach_gradient_coefficients() if args.block_signal == "own" else None
        self.reward_moments = RunningMoments(self.num_objectives) if args.reward_normalization == "running" else None
        self.ideal_point = (
            IdealPoint(self.num_objectives, args.ideal_point) if args.scalarization == "tchebycheff" else None
        )
        self._gathered_rewards = None
        # The (w, R) rows the logged steerability statistics are fitted on, at each log; an evaluation stands alone.
        self._steerability_rows = {
            "train": WeightRewardWindow(args.steerability_window),
            "eval": WeightRewardWindow(0),
        }

    def _conditioning_metadata(self) -> dict:
        return dict(
            min_kl_weight=self.args.min_kl_weight,
            kl_weight=None if self.args.conditions_on_kl_weight else self.kl_weight,
            reward_normalization=self.reward_moments.state_dict() if self.reward_moments is not None else None,
            scalarization=self.scalarization_state,
            chat_template_kwargs=self.args.chat_template_kwargs or None,
        )

    @property
    def scalarization_state(self) -> dict:
        """How rewards are scalarised (saved in `clp_config.json`), with Tchebycheff's current ideal point."""
        if self.ideal_point is None:
            return {"method": "linear"}
        return {
            "method": "tchebycheff",
            **self.ideal_point.state_dict(),
            "augmentation": self.args.tchebycheff_augmentation,
            # A given z is in the units the rewards are scalarised in; the running maxima are of the raw rewards.
            "ideal_point_units": "normalized" if self.ideal_point.given and self.reward_moments is not None else "raw",
        }

    def _scalarize(self, rewards_per_objective, weights, kl=None, kl_weight=None, clip_range=None) -> torch.Tensor:
        """`(N,)` per-row `s(R; w) − α·KL` with the configured scalarisation (see `scalarize_rewards`)."""
        ideal_point = None
        if self.ideal_point is not None:  # the running maxima are raw: normalised with the current statistics here
            normalize = None if self.reward_moments is None else self.reward_moments.normalize
            ideal_point = self.ideal_point.including(rewards_per_objective, normalize)
        return scalarize_rewards(
            rewards_per_objective,
            weights,
            kl,
            kl_weight,
            clip_range,
            scalarization=self.args.scalarization,
            ideal_point=ideal_point,
            augmentation=self.args.tchebycheff_augmentation,
        )

    # ---------------------------------------------------------------- weightings of the rows

    def _draw_row_conditioning(self, num_local_rows: int, num_generations: int, mode: str):
        """Weightings of this process's rows, drawn per global prompt group.

        Returns:
            weights `(N, m)`, KL weights `(N,)` and conditioning vectors `(L, n)` (n = m, plus 1 with the KL weight)
            with N the global and L the local number of rows.
        """
        args = self.args
        num_rows = num_local_rows * self.accelerator.num_processes
        num_groups = num_rows // num_generations
        stream = self._weighting_stream(mode)
        group_weights = self._draw_group_weights(num_groups, stream)  # (G, m)
        if args.conditions_on_kl_weight:
            group_kl = sample_group_kl_weights(num_groups, args.seed, stream, args.kl_weights, args.kl_weight_range)
            group_vectors = kl_conditioning_vector(group_weights, group_kl, args.min_kl_weight)
        else:
            group_kl = torch.full((num_groups,), self.kl_weight)
            group_vectors = group_weights
        device = self.accelerator.device
        weights = group_weights.repeat_interleave(num_generations, dim=0).to(device)  # (N, m)
        kl_weight = group_kl.repeat_interleave(num_generations).to(device)  # (N,)
        vectors = self._local_rows(group_vectors, num_generations, num_local_rows)
        return weights, kl_weight, vectors.to(device)

    def _accumulation_index(self) -> int:
        return self._step % self.args.gradient_accumulation_steps

    # ---------------------------------------------------------------- conditioning of the forward passes

    def _get_per_token_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, **kwargs
    ):
        # TRL scores rows in chunks of `batch_size`; a conditioned forward must see exactly its rows' weightings,
        # so the chunks are formed here, each under its slice of the weightings.
        score = (
            self._unfused_logps_and_entropies
            if self.args.conditioning == "logit"
            else super()._get_per_token_logps_and_entropies
        )
        vectors = self.conditioner.conditioning_vectors
        num_rows = input_ids.size(0)
        if vectors is None or not self.conditioner.conditioned_module_names or (batch_size or num_rows) >= num_rows:
            return score(model, input_ids, attention_mask, logits_to_keep, batch_size, **kwargs)
        logps, entropies, aux_losses = [], [], []
        try:
            for start in range(0, num_rows, batch_size):
                rows = slice(start, start + batch_size)
                self.conditioner.set_conditioning_vectors(vectors[rows])
                chunk_kwargs = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
                chunk_logps, chunk_entropies, chunk_aux = score(
                    model, input_ids[rows], attention_mask[rows], logits_to_keep, None, **chunk_kwargs
                )
                logps.append(chunk_logps)
                entropies.append(chunk_entropies)
                aux_losses.append(chunk_aux)
        finally:
            self.conditioner.set_conditioning_vectors(vectors)
        return (
            torch.cat(logps),
            torch.cat(entropies) if entropies[0] is not None else None,
            torch.stack(aux_losses).mean() if aux_losses[0] is not None else None,
        )

    def _unfused_logps_and_entropies(
        self, model, input_ids, attention_mask, logits_to_keep, batch_size=None, compute_entropy=False, **kwargs
    ):
        """Log-probabilities through the model's own (adapted) output layer, for logit-CLP.

        TRL's fused head multiplies the hidden states by `lm_head.weight` directly, which would skip the conditioned
        LoRA of the output layer. `conditioned_head_logps_and_entropies` applies that layer as its low-rank update
        in tiles instead, so that the `(B, C, V)` logits are never held (exact, gradients included). Models whose
        head it cannot reproduce (quantised, softcapped or scaled logits) materialise the logits.
        """
        if kwargs.get("compute_aux_loss"):
            raise NotImplementedError("conditioning='logit' does not compute the MoE auxiliary loss.")
        output_layer = self.accelerator.unwrap_model(model).get_output_embeddings()
        with self.accelerator.autocast():
            if fuses_output_layer(output_layer, self.model.config):
                logps, entropies = conditioned_head_logps_and_entropies(
                    model,
                    output_layer,
                    input_ids,
                    attention_mask,
                    logits_to_keep,
                    self.conditioner.conditioning_vectors,
                    features=self.conditioner.features,
                    temperature=self.temperature,
                    compute_entropy=compute_entropy,
                )
                return logps, entropies, None
            logits = model(
                input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1
            ).logits
        logits = logits[:, :-1]  # (B, C, V): position t predicts completion token t
        targets = input_ids[:, -logits_to_keep:]  # (B, C)
        if compute_entropy:
            logps, entropies = selective_log_softmax_and_entropy(logits, targets, temperature=self.temperature)
            return logps, entropies, None
        return selective_log_softmax(logits, targets, temperature=self.temperature), None, None

    def _generate(self, prompts: list):
        vectors = self.conditioner.conditioning_vectors
        if self.args.conditioning == "prompt":
            prompts = [
                format_weighted_prompt(prompt, row.tolist(), self.objective_names, self.args.prompt_template)
                for prompt, row in zip(prompts, vectors, strict=True)
            ]
            return super()._generate(prompts)
        num_beams = self.generation_config.num_beams or 1
        if num_beams == 1:
            return super()._generate(prompts)
        # Beam search runs each row as `num_beams` consecutive rows (`repeat_interleave`): their weightings follow.
        self.conditioner.set_conditioning_vectors(vectors.repeat_interleave(num_beams, dim=0))
        try:
            return super()._generate(prompts)
        finally:
            self.conditioner.set_conditioning_vectors(vectors)

    # ---------------------------------------------------------------- rewards and advantages

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, m)
        # TRL turns a callable's None into NaN ("does not apply"); a reward model has no None, so its NaN is a fault,
        # and so is ±inf (an fp16 overflow), which would become the ideal point or the batch statistics for good.
        for i, (func, name) in enumerate(zip(self.reward_funcs, self.objective_names, strict=True)):
            bad = ~torch.isfinite(rewards[:, i])  # (N,)
            if isinstance(func, nn.Module) and bad.any():
                raise ValueError(
                    f"Reward model {name!r} returned non-finite rewards ({rewards[bad, i][0].item()}) for "
                    f"{int(bad.sum())} of {rewards.size(0)} completions: check its weights and dtype (e.g. fp16 "
                    "overflow), or wrap it in a reward function that returns None where it does not apply."
                )
        self._gathered_rewards = rewards
        return rewards

    def _pop_gathered_rewards(self) -> torch.Tensor:
        """`(N, m)` the rewards `_calculate_rewards` gathered during the TRL call that just returned.

        A side channel rather than a return value: TRL's `_generate_and_score_completions` calls `_calculate_rewards`
        in its middle and returns only its output dict, which drops the per-objective rewards (it keeps the advantages
        it computed from them with unit weights). They are taken back here, once, right after that call.
        """
        rewards, self._gathered_rewards = self._gathered_rewards, None
        if rewards is None:
            raise RuntimeError(
                f"{type(self).__name__}: the TRL trainer returned completions without calling `_calculate_rewards`; "
                "this TRL version is not supported (see the tested versions in pyproject.toml)."
            )
        return rewards

    def _completion_logps(self, output: dict, batch_size: int, reference: bool = False) -> torch.Tensor:
        """`(L,)` summed log-probabilities of the local completions, under the policy with each row conditioned on
        its weighting, or with `reference=True` under the reference (adapter disabled)."""
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        adapter = (
            use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None) if reference else nullcontext()
        )
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            adapter,
        ):
            per_token, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, output["completion_ids"].size(1), batch_size
            )
        return (per_token * output["completion_mask"]).sum(1)

    def _policy_logps(self, output: dict, batch_size: int) -> torch.Tensor:
        """Hook: `(L,)` summed log-probabilities of the local completions under the policy that sampled them (called
        with the rows' weightings set). Override to reuse what the TRL trainer already computed."""
        return self._completion_logps(output, batch_size)

    def _rewards_and_advantages(
        self, rewards_per_objective: torch.Tensor, weights: torch.Tensor, kl, kl_weight, num_generations: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: the trainer's group baseline on per-row scalar rewards.

        Args:
            rewards_per_objective: `(N, m)` gathered rewards (normalised if `reward_normalization` says so).
            weights: `(N, m)` each row's weighting; rows `[g·K, (g+1)·K)` form prompt group g and share it.
            kl: `(N,)` sequence KL to the reference, or None when every α is 0.
            kl_weight: `(N,)` each row's α.
            num_generations: K.

        Returns:
            the scalar rewards `(N,)` the advantages were computed from, and the advantages `(N,)` (0 where a row is
            unscorable).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `_rewards_and_advantages`.")

    def _objective_advantages(
        self, rewards_per_objective: torch.Tensor, weights: torch.Tensor, kl, kl_weight, num_generations: int
    ) -> torch.Tensor:
        """Hook (for `block_signal="own"`): each objective's advantage at the rows' mixed policy, `(N, m)`, such that
        `Σ_i w_i A_i` is the advantage `_rewards_and_advantages` returns (its baseline applied to each objective's
        reward minus the KL penalty, `scalarization.objective_rewards`). Arguments as for `_rewards_and_advantages`."""
        raise NotImplementedError(f"{type(self).__name__} does not implement `_objective_advantages`.")

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights, kl_weight, conditioning_vectors = self._draw_row_conditioning(len(inputs), num_generations, mode)
        self.conditioner.set_conditioning_vectors(conditioning_vectors)
        try:
            output = super()._generate_and_score_completions(inputs)
            batch_size = (
                self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            )
            if (kl_weight != 0).any():
                local_kl = self._policy_logps(output, batch_size) - self._completion_logps(output, batch_size, True)
                kl = gather(local_kl)  # (N,)
            else:
                local_kl, kl = None, None
        finally:
            self.conditioner.clear()
        rewards_per_objective = self._pop_gathered_rewards()  # (N, m)

        if self.ideal_point is not None and mode == "train":
            self.ideal_point.update(rewards_per_objective)  # raw: normalised maxima would go stale as statistics move
        if self.reward_moments is not None:
            if mode == "train":
                self.reward_moments.update(rewards_per_objective)
            rewards_per_objective = self.reward_moments.normalize(rewards_per_objective)
        weighted = self._scalarize(rewards_per_objective, weights)  # (N,) s(R; w) without KL, for logging
        rewards, advantages = self._rewards_and_advantages(
            rewards_per_objective, weights, kl, kl_weight, num_generations
        )
        num_local = len(inputs)
        process_slice = slice(
            self.accelerator.process_index * num_local, (self.accelerator.process_index + 1) * num_local
        )
        output["advantages"] = advantages[process_slice]
        output["conditioning_vectors"] = conditioning_vectors
        if self.gradient_coefficients is not None and mode == "train":
            objective_advantages = self._objective_advantages(
                rewards_per_objective, weights, kl, kl_weight, num_generations
            )
            progress = self.state.global_step / max(self.state.max_steps, 1)
            cross_terms = cross_term_weight(progress, self.args.cross_term_start, self.args.cross_term_end)
            coefficients = block_gradient_coefficients(
                objective_advantages, advantages, self._block_objectives(), cross_terms
            )  # (N, num_blocks)
            output["gradient_coefficients"] = coefficients[process_slice]
            self._metrics[mode]["block_signal/cross_term_weight"].append(cross_terms)

        self._replace_trl_logged_values(mode, weighted, rewards, advantages, num_generations)
        self._log_conditioning_metrics(
            mode, rewards_per_objective, weights, kl_weight, local_kl, output["completion_mask"]
        )
        return output

    # ---------------------------------------------------------------- each block's learning signal

    def _attach_gradient_coefficients(self) -> GradientCoefficients:
        """The per-block gradient coefficients of `block_signal="own"`, after refusing what would make them inexact."""
        model = self.accelerator.unwrap_model(self.model)
        if self.aux_loss_enabled:
            raise ValueError(
                "block_signal='own' scales each row's whole gradient per block, the MoE router's auxiliary loss "
                "included: set `router_aux_loss_coef=0` (or `output_router_logits=False`), or use block_signal='mixed'."
            )
        dropouts = sorted(
            {name for name, module in model.named_modules() if isinstance(module, nn.Dropout) and module.p > 0}
        )
        config_dropouts = {
            key: value
            for key, value in model.config.get_text_config().to_dict().items()
            if "dropout" in key and isinstance(value, float) and value > 0
        }
        if dropouts or config_dropouts:
            raise ValueError(
                "block_signal='own' needs the policy ratio to be exactly 1 when a batch is used (PPO clipping depends "
                "on the advantage's sign, which differs per block), but dropout makes it random: "
                f"{dropouts[:3] or config_dropouts}. Set `lora_dropout=0` in the LoRA config and the model's dropout "
                "to 0, or use block_signal='mixed'."
            )
        coefficients = GradientCoefficients(self.conditioner.num_blocks)
        coefficients.attach(model, self.conditioner.conditioned_module_names)
        return coefficients

    def _block_objectives(self) -> list[int | None]:
        """For each conditioned block, the objective whose linear block it is (None: every other block)."""
        conditioner = self.conditioner
        return objective_of_blocks(conditioner.features, conditioner.vector_size, self.num_objectives)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        coefficients = inputs.get("gradient_coefficients")
        if coefficients is None or not model.training:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # Each row's policy-gradient term gets coefficient 1; the advantages weight the parameters' gradients instead,
        # per block (kept set through backward, which gradient checkpointing re-runs the forward in).
        self.gradient_coefficients.set(coefficients, inputs["advantages"])
        inputs = {**inputs, "advantages": torch.ones_like(inputs["advantages"])}
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def training_step(self, model, inputs, num_items_in_batch):
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            if self.gradient_coefficients is not None:
                self.gradient_coefficients.clear()

    def _replace_trl_logged_values(self, mode, weighted, rewards, advantages, num_generations):
        """Overwrite what TRL logged from its unit-weight rewards in this same call with the per-row values.

        Args:
            weighted: `(N,)` each row's `s(R; w)` without KL: the logged `reward` and `reward_std`.
            rewards: `(N,)` the scalar rewards the advantages came from: `frac_reward_zero_std`.
            advantages: `(N,)`: the completions table's advantages.
        """
        metrics = self._metrics[mode]
        metrics["reward"][-1] = torch.nanmean(weighted).item()
        metrics["reward_std"][-1] = nanstd(weighted).item()
        group_std = nanstd(rewards.view(-1, num_generations), dim=1)
        metrics["frac_reward_zero_std"][-1] = (
            torch.isclose(group_std, torch.zeros_like(group_std)).float().mean().item()
        )
        # TRL's unit-weight advantages of these rows were appended last, to a deque capped at `generation_batch_size`:
        # an evaluation batch larger than that left only its newest rows in it.
        for _ in range(min(advantages.numel(), len(self._logs["advantages"]))):
            self._logs["advantages"].pop()
        self._logs["advantages"].extend(advantages.tolist())

    def _log_conditioning_metrics(self, mode, rewards_per_objective, weights, kl_weight, local_kl, completion_mask):
        """Log what CLP adds: the KL to the reference, the weightings, each reward as a function of its weight."""
        metrics = self._metrics[mode]
        if local_kl is not None:
            kl_stats = self.accelerator.reduce(
                torch.stack([local_kl.sum(), completion_mask.sum().float()]), reduction="sum"
            )
            metrics["kl"].append((kl_stats[0] / kl_stats[1].clamp(min=1.0)).item())
        if self.args.conditions_on_kl_weight:
            metrics["kl_weight/mean"].append(kl_weight.mean().item())
        if mode == "train" and self._sampled_weightings is not None:
            self._sampled_weightings.append(weights.cpu())
        self._steerability_rows[mode].add(weights, rewards_per_objective)  # fitted in `log`
        for i, name in enumerate(self.objective_names):
            metrics[f"weights/{name}/mean"].append(weights[:, i].mean().item())
            self._logs["extra"][f"w_{name}"].extend(weights[:, i].tolist())

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """TRL's log, with each reward as a function of its weight fitted once on the pooled rows of the window."""
        mode = "train" if self.model.training else "eval"
        by_weight = self._steerability_rows[mode].fit()  # {statistic: (m,)}, None if no batch since the last log
        for statistic, values in (by_weight or {}).items():
            for name, value in zip(self.objective_names, values.tolist(), strict=True):
                self._metrics[mode][f"rewards/{name}/{statistic}"] = [value]
        super().log(logs, start_time)

    # ---------------------------------------------------------------- resuming

    def _restore_training_state(self, saved: ConditioningConfig, resume_from_checkpoint: str) -> None:
        """Restore the reward statistics of the checkpoint being resumed."""
        if self.reward_moments is not None and saved.reward_normalization is not None:
            self.reward_moments.load_state_dict(saved.reward_normalization)
        if (
            self.ideal_point is not None
            and saved.scalarization["method"] == "tchebycheff"
            and not self.ideal_point.given
        ):
            # Files written before `ideal_point_units` kept the running maxima in normalised units when normalising.
            saved_units = saved.scalarization.get(
                "ideal_point_units", "raw" if saved.reward_normalization is None else "normalized"
            )
            if saved_units == "raw":
                self.ideal_point.load_state_dict(saved.scalarization)
            else:
                warnings.warn(
                    f"Checkpoint {resume_from_checkpoint!r} kept its running ideal point in normalised units, which "
                    "go stale as the reward statistics move: it is rebuilt from the raw rewards of the next batches.",
                    stacklevel=2,
                )
