"""CLP training on a TRL online trainer: `ConditionedTrainerMixin`, and `MultiObjectiveTrainer` (RLOO + the mixin).

`ConditionedTrainerMixin` holds everything CLP adds to a TRL trainer: per-group weighting draws, conditioned
forwards, per-row rewards, logging, save/resume metadata. A trainer class mixes it in ahead of the TRL class and
implements one hook, `_rewards_and_advantages` (its group baseline); see `MultiObjectiveTrainer` below and
`trl_clp.grpo_trainer.MultiObjectiveGRPOTrainer`.
"""

from __future__ import annotations

import glob
import os
import shutil
import warnings
from collections.abc import Sized
from contextlib import nullcontext

import torch
from accelerate.utils import gather, is_peft_model
from peft import LoraConfig
from torch import nn
from transformers import ProcessorMixin
from transformers.trainer_utils import get_last_checkpoint
from trl import RLOOTrainer
from trl.data_utils import is_conversational
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import (
    get_callable_name,
    get_config_model_id,
    nanstd,
    selective_log_softmax,
    selective_log_softmax_and_entropy,
    use_adapter,
)

from .callbacks import WeightingHistogramCallback
from .conditioning.config import CLP_CONFIG_NAME, ConditioningConfig
from .conditioning.fused_head import conditioned_head_logps_and_entropies, fuses_output_layer
from .conditioning.model import (
    attach_conditioning,
    build_conditioned_lora_config,
    check_linear_lora_config,
    resolve_conditioned_targets,
)
from .conditioning.prompts import format_weighted_prompt
from .evaluation import Front
from .guards import (  # noqa: F401 (re-exported: `from trl_clp.trainer import RewardFunctionError` keeps working)
    RewardFunctionError,
    check_free_disk_space,
    check_output_dir_writable,
    check_reward_values,
    checked_reward_function,
    checkpoint_bytes,
)
from .model_card import CLP_PAPER, finish_model_card
from .pareto import WeightRewardWindow
from .rloo_config import ConditioningFields, MultiObjectiveConfig
from .sampling import kl_conditioning_vector, sample_group_kl_weights, sample_group_weights
from .scalarization import IdealPoint, RunningMoments, leave_one_out_advantages, scalarize_rewards

DEFAULT_LORA_CONFIG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
# Stream keys keep training and evaluation weight draws apart.
TRAIN_STREAM, EVAL_STREAM = 0, 1


def reward_function_name(reward_func) -> str:
    """The name TRL gives a reward function (model id's last part, or the callable's name)."""
    if isinstance(reward_func, str):
        return reward_func.rstrip("/").split("/")[-1]
    if isinstance(reward_func, nn.Module):
        return get_config_model_id(reward_func.config).split("/")[-1]
    return get_callable_name(reward_func)


class ConditionedTrainerMixin:
    """
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
    6. Construction fails if `output_dir` cannot be written or lacks disk space for the checkpoints; a reward
       function that raises stops training with a `RewardFunctionError` naming it. With TensorBoard, W&B or trackio
       in `report_to`, the sampled weightings are logged as histograms.

    A trainer class sets `config_class` (its config, a `ConditioningFields` subclass) and implements
    `_rewards_and_advantages`; it may override `_policy_logps` if its TRL trainer does not always compute the old
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
    _name = "CLP"
    _paper = CLP_PAPER

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
        if args is None:  # named after the model, as TRL's trainers name their default config
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = self.config_class(f"{model_name.split('/')[-1]}-CLP")
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"`args` must be a `{self.config_class.__name__}`, got {type(args).__name__}: it carries the weighting "
                "distribution and conditioning variant."
            )
        reward_funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        args.check_num_objectives(len(reward_funcs))
        names = args.objective_names or [reward_function_name(func) for func in reward_funcs]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"Two reward functions are both called {duplicates}: set `objective_names` in the config to tell the "
                "objectives apart."
            )
        if isinstance(model, nn.Module) and is_peft_model(model):
            raise ValueError(
                f"Pass the base model and a `peft_config`: {type(self).__name__} builds the conditioned adapter itself. "
                "To continue from a trained CLP adapter, use `resume_from_checkpoint`."
            )
        if isinstance(processing_class, ProcessorMixin):
            raise ValueError(
                f"{type(self).__name__} supports text-only models; pass a tokenizer as `processing_class`."
            )
        column_names = getattr(train_dataset, "column_names", None)
        if column_names is not None and "prompt" not in column_names:
            raise ValueError(
                f"The training dataset has columns {column_names} but no 'prompt' column: rename the column holding "
                "the prompts to 'prompt' (e.g. `dataset.rename_column('text', 'prompt')`)."
            )
        if isinstance(train_dataset, Sized) and len(train_dataset) == 0:
            raise ValueError("The training dataset is empty: training would run 0 steps. Pass a dataset with prompts.")
        peft_config = peft_config if peft_config is not None else DEFAULT_LORA_CONFIG
        check_linear_lora_config(peft_config)
        if args.should_save:
            check_output_dir_writable(args.output_dir)

        self.objective_names = names
        self.num_objectives = len(names)
        num_blocks = self.num_objectives + int(args.conditions_on_kl_weight)
        conditioned_targets = resolve_conditioned_targets(args.conditioning, args.conditioned_target_modules)
        lora_config = build_conditioned_lora_config(peft_config, args.conditioning, conditioned_targets, num_blocks)
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

        self.conditioner = attach_conditioning(
            self.model, peft_config, args.conditioning, conditioned_targets, num_blocks
        )
        self.reward_moments = RunningMoments(self.num_objectives) if args.reward_normalization == "running" else None
        self.ideal_point = (
            IdealPoint(self.num_objectives, args.ideal_point) if args.scalarization == "tchebycheff" else None
        )
        if self.args.should_save:
            check_free_disk_space(args.output_dir, checkpoint_bytes(self.model, args))
        # (N, m) per generation since the last log, kept only for the trackers' weighting histograms.
        self._sampled_weightings: list[torch.Tensor] | None = None
        if {"tensorboard", "wandb", "trackio"} & set(self.args.report_to or []):
            self._sampled_weightings = []
            self.add_callback(WeightingHistogramCallback(self))
        self._eval_draws = 0
        self._gathered_rewards = None
        # The (w, R) rows the logged steerability statistics are fitted on, at each log; an evaluation stands alone.
        self._steerability_rows = {
            "train": WeightRewardWindow(args.steerability_window),
            "eval": WeightRewardWindow(0),
        }

    def pop_sampled_weightings(self) -> torch.Tensor | None:
        """`(N, m)` the weightings of the rows generated since the last call, or None if there were none."""
        if not self._sampled_weightings:  # None (no histogram tracker) or nothing generated since the last log
            return None
        weights, self._sampled_weightings = torch.cat(self._sampled_weightings), []
        return weights

    @property
    def conditioning_config(self) -> ConditioningConfig:
        """The metadata saved beside the adapter."""
        return ConditioningConfig(
            objective_names=self.objective_names,
            conditioning=self.args.conditioning,
            conditioned_modules=list(self.conditioner.conditioned_module_names),
            num_blocks=self.conditioner.num_blocks,
            min_kl_weight=self.args.min_kl_weight,
            kl_weight=None if self.args.conditions_on_kl_weight else self.kl_weight,
            prompt_template=self.args.prompt_template,
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
        }

    def _scalarize(self, rewards_per_objective, weights, kl=None, kl_weights=None, clip_range=None) -> torch.Tensor:
        """`(N,)` per-row `s(R; w) − α·KL` with the configured scalarisation (see `scalarize_rewards`)."""
        return scalarize_rewards(
            rewards_per_objective,
            weights,
            kl,
            kl_weights,
            clip_range,
            scalarization=self.args.scalarization,
            ideal_point=None if self.ideal_point is None else self.ideal_point.including(rewards_per_objective),
            augmentation=self.args.tchebycheff_augmentation,
        )

    # ---------------------------------------------------------------- weightings of the rows

    def _draw_row_conditioning(self, num_local_rows: int, num_generations: int, mode: str):
        """Weightings of this process's rows, drawn per global prompt group.

        Returns:
            weights `(N, m)`, KL weights `(N,)` and conditioning vectors `(L, num_blocks)` with N the global and L
            the local number of rows.
        """
        args = self.args
        num_rows = num_local_rows * self.accelerator.num_processes
        num_groups = num_rows // num_generations
        if mode == "train":
            accumulation = args.gradient_accumulation_steps
            stream = (TRAIN_STREAM, self.state.global_step * accumulation + self._step % accumulation)
        else:
            stream = (EVAL_STREAM, self._eval_draws)
            self._eval_draws += 1
        group_weights = sample_group_weights(
            args.weight_distribution,
            num_groups,
            self.num_objectives,
            args.seed,
            stream,
            concentration=args.dirichlet_concentration,
            fixed_weights=args.parsed_fixed_weights,
        )  # (G, m)
        if args.conditions_on_kl_weight:
            group_kl = sample_group_kl_weights(num_groups, args.seed, stream, args.kl_weights, args.kl_weight_range)
            group_vectors = kl_conditioning_vector(group_weights, group_kl, args.min_kl_weight)
        else:
            group_kl = torch.full((num_groups,), self.kl_weight)
            group_vectors = group_weights
        device = self.accelerator.device
        weights = group_weights.repeat_interleave(num_generations, dim=0).to(device)  # (N, m)
        kl_weights = group_kl.repeat_interleave(num_generations).to(device)  # (N,)
        start = self.accelerator.process_index * num_local_rows
        vectors = group_vectors.repeat_interleave(num_generations, dim=0)[start : start + num_local_rows]
        return weights, kl_weights, vectors.to(device)

    # ---------------------------------------------------------------- conditioning of the forward passes

    def training_step(self, model, inputs, num_items_in_batch):
        # compute_loss sets the rows' weightings; they must stay set through backward, which re-runs the forward
        # under gradient checkpointing. Cleared here, once backward is done.
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self.conditioner.clear()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.conditioner.set_weights(inputs["conditioning_vectors"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            self.conditioner.clear()

    def evaluation_loop(self, *args, **kwargs):
        # Each evaluation draws the same weightings, so that its metrics compare across evaluations.
        self._eval_draws = 0
        return super().evaluation_loop(*args, **kwargs)

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
        weights = self.conditioner.weights
        num_rows = input_ids.size(0)
        if weights is None or not self.conditioner.conditioned_module_names or (batch_size or num_rows) >= num_rows:
            return score(model, input_ids, attention_mask, logits_to_keep, batch_size, **kwargs)
        logps, entropies, aux_losses = [], [], []
        try:
            for start in range(0, num_rows, batch_size):
                rows = slice(start, start + batch_size)
                self.conditioner.set_weights(weights[rows])
                chunk_kwargs = {k: v[rows] if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
                chunk_logps, chunk_entropies, chunk_aux = score(
                    model, input_ids[rows], attention_mask[rows], logits_to_keep, None, **chunk_kwargs
                )
                logps.append(chunk_logps)
                entropies.append(chunk_entropies)
                aux_losses.append(chunk_aux)
        finally:
            self.conditioner.set_weights(weights)
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
                    self.conditioner.weights,
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
        weights = self.conditioner.weights
        if self.args.conditioning == "prompt":
            prompts = [
                format_weighted_prompt(prompt, row.tolist(), self.objective_names, self.args.prompt_template)
                for prompt, row in zip(prompts, weights, strict=True)
            ]
            return super()._generate(prompts)
        num_beams = self.generation_config.num_beams or 1
        if num_beams == 1:
            return super()._generate(prompts)
        # Beam search runs each row as `num_beams` consecutive rows (`repeat_interleave`): their weightings follow.
        self.conditioner.set_weights(weights.repeat_interleave(num_beams, dim=0))
        try:
            return super()._generate(prompts)
        finally:
            self.conditioner.set_weights(weights)

    # ---------------------------------------------------------------- rewards and advantages

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, m)
        # TRL turns a callable's None into NaN ("does not apply"); a reward model has no None, so its NaN is a fault.
        for i, (func, name) in enumerate(zip(self.reward_funcs, self.objective_names, strict=True)):
            if isinstance(func, nn.Module) and torch.isnan(rewards[:, i]).any():
                raise ValueError(
                    f"Reward model {name!r} returned NaN for {int(torch.isnan(rewards[:, i]).sum())} of "
                    f"{rewards.size(0)} completions: check its weights and dtype (e.g. fp16 overflow), or wrap it in a "
                    "reward function that returns None where it does not apply."
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
        self, rewards_per_objective: torch.Tensor, weights: torch.Tensor, kl, kl_weights, num_generations: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hook: the trainer's group baseline on per-row scalar rewards.

        Args:
            rewards_per_objective: `(N, m)` gathered rewards (normalised if `reward_normalization` says so).
            weights: `(N, m)` each row's weighting; rows `[g·K, (g+1)·K)` form prompt group g and share it.
            kl: `(N,)` sequence KL to the reference, or None when every α is 0.
            kl_weights: `(N,)` each row's α.
            num_generations: K.

        Returns:
            the scalar rewards `(N,)` the advantages were computed from, and the advantages `(N,)` (0 where a row is
            unscorable).
        """
        raise NotImplementedError(f"{type(self).__name__} must implement `_rewards_and_advantages`.")

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights, kl_weights, conditioning_vectors = self._draw_row_conditioning(len(inputs), num_generations, mode)
        self.conditioner.set_weights(conditioning_vectors)
        try:
            output = super()._generate_and_score_completions(inputs)
            batch_size = (
                self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            )
            if (kl_weights != 0).any():
                local_kl = self._policy_logps(output, batch_size) - self._completion_logps(output, batch_size, True)
                kl = gather(local_kl)  # (N,)
            else:
                local_kl, kl = None, None
        finally:
            self.conditioner.clear()
        rewards_per_objective = self._pop_gathered_rewards()  # (N, m)

        if self.reward_moments is not None:
            if mode == "train":
                self.reward_moments.update(rewards_per_objective)
            rewards_per_objective = self.reward_moments.normalize(rewards_per_objective)
        if self.ideal_point is not None and mode == "train":
            self.ideal_point.update(rewards_per_objective)
        weighted = self._scalarize(rewards_per_objective, weights)  # (N,) s(R; w) without KL, for logging
        rewards, advantages = self._rewards_and_advantages(
            rewards_per_objective, weights, kl, kl_weights, num_generations
        )
        num_local = len(inputs)
        process_slice = slice(
            self.accelerator.process_index * num_local, (self.accelerator.process_index + 1) * num_local
        )
        output["advantages"] = advantages[process_slice]
        output["conditioning_vectors"] = conditioning_vectors

        self._replace_trl_logged_values(mode, weighted, rewards, advantages, num_generations)
        self._log_conditioning_metrics(
            mode, rewards_per_objective, weights, kl_weights, local_kl, output["completion_mask"]
        )
        return output

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
        for _ in range(advantages.numel()):  # TRL's unit-weight advantages of these rows, appended last
            self._logs["advantages"].pop()
        self._logs["advantages"].extend(advantages.tolist())

    def _log_conditioning_metrics(self, mode, rewards_per_objective, weights, kl_weights, local_kl, completion_mask):
        """Log what CLP adds: the KL to the reference, the weightings, each reward as a function of its weight."""
        metrics = self._metrics[mode]
        if local_kl is not None:
            kl_stats = self.accelerator.reduce(
                torch.stack([local_kl.sum(), completion_mask.sum().float()]), reduction="sum"
            )
            metrics["kl"].append((kl_stats[0] / kl_stats[1].clamp(min=1.0)).item())
        if self.args.conditions_on_kl_weight:
            metrics["kl_weight/mean"].append(kl_weights.mean().item())
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

    # ---------------------------------------------------------------- saving and resuming

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, citing CLP, with how to steer the model and its evaluated front instead of TRL's quick
        start. The model is named after `hub_model_id`, else `output_dir`.

        The front is `<output_dir>/front.json` if present (written by `Front.save`, e.g. by the main example),
        else the latest `fronts/step-<N>.json` of a `FrontEvaluationCallback`.
        """
        model_id = self.hub_model_id or self.args.hub_model_id or self.args.output_dir
        model_name = model_name or os.path.basename(os.path.normpath(model_id))
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        front_path = os.path.join(self.args.output_dir, "front.json")
        if not os.path.isfile(front_path):
            steps = glob.glob(os.path.join(self.args.output_dir, "fronts", "step-*.json"))
            front_path = max(steps, key=lambda p: int(p.rsplit("-", 1)[1][:-5])) if steps else None
        front = Front.load(front_path) if front_path else None
        card_path = os.path.join(self.args.output_dir, "README.md")
        with open(card_path) as handle:
            card = handle.read()
        base_model = get_config_model_id(self.accelerator.unwrap_model(self.model).config) or None
        # A chat model's card steers a conversation: trained on conversations, or its tokenizer has a chat template.
        chat = self.processing_class.chat_template is not None or is_conversational(next(iter(self.train_dataset)))
        with open(card_path, "w") as handle:
            handle.write(finish_model_card(card, self.conditioning_config, model_id, front, base_model, chat=chat))

    def _save(self, output_dir: str | None = None, state_dict=None):
        if self.args.conditioning == "logit":
            # With the output layer among its targets, PEFT also saves that layer's frozen base weights, which a
            # reload takes from the base model anyway. Leaving them out of the state dict (the one transformers
            # gathered, under ZeRO-3 or FSDP) keeps PEFT's single save to the adapter.
            if state_dict is None:
                state_dict = self.accelerator.unwrap_model(self.model).state_dict()
            frozen = tuple(f"{name}.base_layer." for name in self.conditioner.conditioned_module_names)
            state_dict = {key: value for key, value in state_dict.items() if not key.startswith(frozen)}
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Setting `save_embedding_layers` to `True`")
                super()._save(output_dir, state_dict)
        else:
            super()._save(output_dir, state_dict)
        if self.args.should_save:  # `_save` also runs on the other ranks when they join sharded gathers
            output_dir = output_dir or self.args.output_dir
            self.conditioning_config.save(output_dir)
            # The card goes with every save (PEFT's save alone leaves its blank template); TRL writes it to output_dir.
            self.create_model_card()
            if os.path.abspath(output_dir) != os.path.abspath(self.args.output_dir):
                shutil.copyfile(os.path.join(self.args.output_dir, "README.md"), os.path.join(output_dir, "README.md"))

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, ignore_keys_for_eval=None):
        """`Trainer.train`, after checking the checkpoint to resume from and restoring its reward statistics.

        Done here rather than in `_load_from_checkpoint`, which transformers skips under DeepSpeed (it calls its own
        checkpoint loader): `train` is the public entry point every backend passes through, before anything is loaded.
        """
        # `True` resolved the way `Trainer.train` resolves it, so that both read the same checkpoint.
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        if checkpoint:
            self._restore_conditioning_state(checkpoint)
        return super().train(resume_from_checkpoint, trial, ignore_keys_for_eval)

    def _restore_conditioning_state(self, resume_from_checkpoint: str) -> None:
        """Check that `resume_from_checkpoint` was trained on these objectives; restore its reward statistics."""
        path = os.path.join(resume_from_checkpoint, CLP_CONFIG_NAME)
        if not os.path.isfile(path):
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} has no {CLP_CONFIG_NAME}: it was not written by "
                "trl-clp, so its adapter cannot be matched to the objectives."
            )
        saved = ConditioningConfig.load(path)
        if saved.objective_names != self.objective_names or saved.conditioning != self.args.conditioning:
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} was trained on objectives {saved.objective_names} with "
                f"conditioning={saved.conditioning!r}, but this trainer has {self.objective_names} with "
                f"conditioning={self.args.conditioning!r}. Resume with the same reward functions, in the same order."
            )
        if self.reward_moments is not None and saved.reward_normalization is not None:
            self.reward_moments.load_state_dict(saved.reward_normalization)
        if (
            self.ideal_point is not None
            and saved.scalarization["method"] == "tchebycheff"
            and not self.ideal_point.given
        ):
            self.ideal_point.load_state_dict(saved.scalarization)


class MultiObjectiveTrainer(ConditionedTrainerMixin, RLOOTrainer):
    """CLP on [`~trl.RLOOTrainer`]: the conditioning of `ConditionedTrainerMixin` (see there for every change
    with respect to RLOO) with RLOO's leave-one-out baseline on the per-row rewards `w·R − α·KL`.

    Args:
        model, reward_funcs, peft_config, and the other arguments: as for `ConditionedTrainerMixin`.
        args: a [`MultiObjectiveConfig`].
    """

    config_class = MultiObjectiveConfig
    _tag_names = ["trl", "rloo", "clp", "trl-clp"]

    def _policy_logps(self, output, batch_size):
        return output["old_logps"]  # RLOO always scores the completions under the sampling policy

    def _rewards_and_advantages(self, rewards_per_objective, weights, kl, kl_weights, num_generations):
        rewards = self._scalarize(rewards_per_objective, weights, kl, kl_weights, self.reward_clip_range)  # (N,)
        advantages = leave_one_out_advantages(rewards, num_generations)
        if self.normalize_advantages:
            advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
        return rewards, torch.nan_to_num(advantages, nan=0.0)
