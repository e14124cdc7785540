"""`MultiObjectiveTrainer`: RLOO that trains one policy for every weighting of several rewards (CLP)."""

from __future__ import annotations

import functools
import glob
import inspect
import math
import numbers
import os
import shutil

import torch
from accelerate.utils import gather, is_peft_model
from peft import LoraConfig
from torch import nn
from transformers import ProcessorMixin
from trl import RLOOTrainer
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
from .conditioning.config import (
    CLP_CONFIG_NAME,
    ConditioningConfig,
    build_conditioned_lora_config,
    check_linear_lora_config,
    format_weighted_prompt,
    resolve_conditioned_targets,
)
from .conditioning.fused_head import conditioned_head_logps_and_entropies, fuses_output_layer
from .conditioning.layer import WeightConditioner, add_conditioned_output_layer, find_conditioned_layers
from .config import MultiObjectiveConfig
from .evaluation import Front
from .model_card import steering_card_section
from .rewards import RunningMoments, leave_one_out_advantages, scalarize_rewards
from .sampling import kl_conditioning_vector, sample_group_kl_weights, sample_group_weights

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


def _check_reward_values(values, name: str, expected: int) -> None:
    if not isinstance(values, (list, tuple)) and not isinstance(values, torch.Tensor):
        raise TypeError(f"Reward function {name!r} returned {type(values).__name__}; return a list of floats.")
    if len(values) != expected:
        raise ValueError(
            f"Reward function {name!r} returned {len(values)} rewards for {expected} completions: return exactly one "
            "per completion (None where it does not apply)."
        )
    for index, value in enumerate(values):
        if value is None:
            continue
        if not isinstance(value, numbers.Real) and not (isinstance(value, torch.Tensor) and value.numel() == 1):
            raise TypeError(
                f"Reward function {name!r} returned {value!r} ({type(value).__name__}) at position {index}: return a "
                "float, or None where the reward does not apply."
            )
        if not math.isfinite(float(value)):
            raise ValueError(
                f"Reward function {name!r} returned {float(value)} at position {index}: rewards must be finite (return "
                "None where a reward does not apply)."
            )


class RewardFunctionError(RuntimeError):
    """A reward function raised during training; the message names it and says how to continue."""

    def __init__(self, name: str, error: Exception):
        super().__init__(
            f"Reward function {name!r} raised {type(error).__name__}: {error}\nTraining stopped before this step's "
            "update; checkpoints already saved are complete. Fix the reward function and continue with "
            "`trainer.train(resume_from_checkpoint=True)`."
        )
        self.reward_name = name


def check_output_dir_writable(output_dir: str) -> None:
    """Fail before anything is loaded if `output_dir` cannot be created or written.

    Raises:
        ValueError naming the directory and what to change.
    """
    probe = os.path.join(output_dir, f".trl_clp_write_test_{os.getpid()}")
    try:
        os.makedirs(output_dir, exist_ok=True)
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise ValueError(
            f"Cannot write to output_dir={output_dir!r} ({error.strerror or error}): checkpoints and the adapter would "
            "be lost. Choose a writable `output_dir`."
        ) from error


def check_free_disk_space(output_dir: str, required_bytes: int) -> None:
    """Fail before training if the disk of `output_dir` has less than `required_bytes` free.

    Raises:
        ValueError saying how much is free, how much is needed, and what to change.
    """
    free = shutil.disk_usage(output_dir).free
    if free < required_bytes:
        raise ValueError(
            f"output_dir={output_dir!r} has {free / 2**20:.1f} MiB free, but saving needs about "
            f"{required_bytes / 2**20:.1f} MiB (adapter, optimizer state, one checkpoint beside the next). Free some "
            "disk space, choose another `output_dir`, or set `save_strategy='no'`."
        )


def checkpoint_bytes(model: nn.Module, args) -> int:
    """Estimated bytes on disk while training: each checkpoint holds the trainable parameters and two Adam moments.

    Two checkpoints coexist while `save_total_limit` rotates them; with `save_strategy="no"`, only the final adapter
    is written.
    """
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    adapter = 4 * trainable + 2**20  # float32 weights, plus configs, tokenizer and trainer state
    if args.save_strategy == "no":
        return adapter
    return adapter + 2 * (adapter + 8 * trainable)


def checked_reward_function(reward_func, name: str):
    """Wrap a callable reward function so that a bad return value fails with a message naming it.

    The wrapper keeps the name (TRL labels metrics with it) and the sync/async kind of the original.
    """
    if inspect.iscoroutinefunction(reward_func) or inspect.iscoroutinefunction(getattr(reward_func, "__call__", None)):

        @functools.wraps(reward_func)
        async def async_checked(prompts, completions, **kwargs):
            try:
                values = await reward_func(prompts=prompts, completions=completions, **kwargs)
            except Exception as error:
                raise RewardFunctionError(name, error) from error
            _check_reward_values(values, name, len(prompts))
            return values

        async_checked.__name__ = name
        return async_checked

    @functools.wraps(reward_func)
    def checked(prompts, completions, **kwargs):
        try:
            values = reward_func(prompts=prompts, completions=completions, **kwargs)
        except Exception as error:
            raise RewardFunctionError(name, error) from error
        _check_reward_values(values, name, len(prompts))
        return values

    checked.__name__ = name
    return checked


class MultiObjectiveTrainer(RLOOTrainer):
    """
    Conditional Language Policy training (Wang et al., 2024, https://huggingface.co/papers/2407.15762) on top of
    [`~trl.RLOOTrainer`]: one LoRA-adapted policy π(y | x; w) for every weighting w of several reward functions.

    The only changes with respect to `RLOOTrainer` are:

    1. The PEFT adapter is built from `peft_config` with one LoRA block per objective in the conditioned layers
       (`args.conditioning`), and each batch row mixes the blocks with its own weighting (see
       `trl_clp.conditioning.layer`).
    2. Each global prompt group draws its weighting w (and, with `kl_weights`/`kl_weight_range`, its KL weight α)
       from a stream seeded by `(args.seed, micro-step)`: identical on every rank and continued on resume. The rows'
       weightings travel with the rows through TRL's buffering, shuffling and splitting.
    3. Generation, old and new log-probabilities are computed with each row conditioned on its weighting; for
       `conditioning="prompt"`, the weighting is written into the generated prompt instead (reward functions
       still see the original prompt).
    4. The scalar reward is computed per row, `w·R − α·KL`, and the leave-one-out advantages are recomputed from
       it (TRL's fixed `reward_weights` and scalar `beta` are neutralised). The logged `reward`, `reward_std`,
       `frac_reward_zero_std`, `kl` and the completions table's advantages are corrected accordingly, and the
       weightings and the reward as a function of the weighting are logged.
    5. `save_model` writes `clp_config.json` (the conditioning metadata) beside the adapter; resuming checks it;
       the model card says how to steer the model and shows its evaluated front.
    6. Construction fails if `output_dir` cannot be written or lacks disk space for the checkpoints; a reward
       function that raises stops training with a `RewardFunctionError` naming it. With TensorBoard, W&B or trackio
       in `report_to`, the sampled weightings are logged as histograms.

    Args:
        model: a model id, a local path, or a `PreTrainedModel` (not a `PeftModel`: the conditioned adapter is
            built here).
        reward_funcs: one reward function per objective, of any kind `RLOOTrainer` takes (callables, async
            callables, reward-model ids, paths or modules).
        args: a [`MultiObjectiveConfig`].
        peft_config: the LoRA of ONE objective (rank, alpha, targets, dropout); default rank 8, alpha 16,
            all linear layers. DoRA, rsLoRA and data-driven inits are rejected (not linear in the blocks).
        Other arguments: as for `RLOOTrainer`.
    """

    _tag_names = ["trl", "rloo", "clp", "trl-clp"]
    _name = "CLP"

    def __init__(
        self,
        model,
        reward_funcs,
        args: MultiObjectiveConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        reward_processing_classes=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config: LoraConfig | None = None,
    ):
        if not isinstance(args, MultiObjectiveConfig):
            raise TypeError(
                f"`args` must be a `MultiObjectiveConfig`, got {type(args).__name__}: it carries the weighting "
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
                "Pass the base model and a `peft_config`: MultiObjectiveTrainer builds the conditioned adapter itself. "
                "To continue from a trained CLP adapter, use `resume_from_checkpoint`."
            )
        if isinstance(processing_class, ProcessorMixin):
            raise ValueError("MultiObjectiveTrainer supports text-only models; pass a tokenizer as `processing_class`.")
        column_names = getattr(train_dataset, "column_names", None)
        if column_names is not None and "prompt" not in column_names:
            raise ValueError(
                f"The training dataset has columns {column_names} but no 'prompt' column: rename the column holding "
                "the prompts to 'prompt' (e.g. `dataset.rename_column('text', 'prompt')`)."
            )
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
        # computation runs with unit weights and no KL so that it costs no reference forward pass.
        self.kl_weight = self.beta
        self.beta = 0.0
        self.reward_weights = torch.ones(self.num_objectives)

        self.conditioner = WeightConditioner(num_blocks)
        if args.conditioning == "logit":
            self.conditioner.attach(self.model, [add_conditioned_output_layer(self.model, peft_config, num_blocks)])
        elif args.conditioning != "prompt":
            self.conditioner.attach(self.model, find_conditioned_layers(self.model, conditioned_targets))
        self.reward_moments = RunningMoments(self.num_objectives) if args.reward_normalization == "running" else None
        if self.args.should_save:
            check_free_disk_space(args.output_dir, checkpoint_bytes(self.model, args))
        # (N, m) per generation since the last log, kept only for the trackers' weighting histograms.
        self._sampled_weightings: list[torch.Tensor] | None = None
        if {"tensorboard", "wandb", "trackio"} & set(self.args.report_to or []):
            self._sampled_weightings = []
            self.add_callback(WeightingHistogramCallback(self))
        self._eval_draws = 0
        self._gathered_rewards = None

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
            variant=self.args.conditioning,
            conditioned_modules=list(self.conditioner.conditioned_module_names),
            num_blocks=self.conditioner.num_blocks,
            min_kl_weight=self.args.min_kl_weight,
            kl_weight=None if self.args.conditions_on_kl_weight else self.kl_weight,
            prompt_template=self.args.prompt_template,
            reward_normalization=self.reward_moments.state_dict() if self.reward_moments is not None else None,
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
            fixed_weights=args.fixed_weights,
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
        self.conditioner.set_weights(inputs["clp_weights"])
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        try:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys)
        finally:
            self.conditioner.clear()

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
            logits = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1).logits
        logits = logits[:, :-1]  # (B, C, V): position t predicts completion token t
        targets = input_ids[:, -logits_to_keep:]  # (B, C)
        if compute_entropy:
            logps, entropies = selective_log_softmax_and_entropy(logits, targets, temperature=self.temperature)
            return logps, entropies, None
        return selective_log_softmax(logits, targets, temperature=self.temperature), None, None

    def _generate(self, prompts: list):
        if self.args.conditioning == "prompt":
            weights = self.conditioner.weights
            prompts = [
                format_weighted_prompt(prompt, row.tolist(), self.objective_names, self.args.prompt_template)
                for prompt, row in zip(prompts, weights, strict=True)
            ]
        return super()._generate(prompts)

    # ---------------------------------------------------------------- rewards and advantages

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # (N, m)
        self._gathered_rewards = rewards
        return rewards

    def _reference_logps(self, output: dict, batch_size: int) -> torch.Tensor:
        """`(L,)` summed log-probabilities of the local completions under the reference (adapter disabled)."""
        input_ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        attention_mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        with (
            torch.no_grad(),
            disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs),
            use_adapter(self.accelerator.unwrap_model(self.model), adapter_name=None),
        ):
            per_token, _, _ = self._get_per_token_logps_and_entropies(
                self.model, input_ids, attention_mask, output["completion_ids"].size(1), batch_size
            )
        return (per_token * output["completion_mask"]).sum(1)

    def _generate_and_score_completions(self, inputs):
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        weights, kl_weights, local_vectors = self._draw_row_conditioning(len(inputs), num_generations, mode)
        self.conditioner.set_weights(local_vectors)
        try:
            output = super()._generate_and_score_completions(inputs)
            batch_size = self.args.per_device_train_batch_size if mode == "train" else self.args.per_device_eval_batch_size
            if (kl_weights != 0).any():
                local_kl = output["old_logps"] - self._reference_logps(output, batch_size)  # (L,)
                kl = gather(local_kl)  # (N,)
            else:
                local_kl, kl = None, None
        finally:
            self.conditioner.clear()
        rewards_per_objective, self._gathered_rewards = self._gathered_rewards, None  # (N, m)

        if self.reward_moments is not None:
            if mode == "train":
                self.reward_moments.update(rewards_per_objective)
            rewards_per_objective = self.reward_moments.normalize(rewards_per_objective)
        weighted = scalarize_rewards(rewards_per_objective, weights)  # (N,) w·R, for logging
        rewards = scalarize_rewards(rewards_per_objective, weights, kl, kl_weights, self.reward_clip_range)  # (N,)
        advantages = leave_one_out_advantages(rewards, num_generations)
        if self.normalize_advantages:
            advantages = (advantages - torch.nanmean(advantages)) / (nanstd(advantages) + 1e-4)
        advantages = torch.nan_to_num(advantages, nan=0.0)
        num_local = len(inputs)
        process_slice = slice(self.accelerator.process_index * num_local, (self.accelerator.process_index + 1) * num_local)
        output["advantages"] = advantages[process_slice]
        output["clp_weights"] = local_vectors

        self._log_conditioned_metrics(mode, rewards_per_objective, weights, kl_weights, weighted, rewards, advantages,
                                      local_kl, output["completion_mask"], num_generations)
        return output

    def _log_conditioned_metrics(self, mode, rewards_per_objective, weights, kl_weights, weighted, rewards,
                                 advantages, local_kl, completion_mask, num_generations):
        metrics = self._metrics[mode]
        # TRL appended these from its unit-weight rewards in this same call: replace them.
        metrics["reward"][-1] = torch.nanmean(weighted).item()
        metrics["reward_std"][-1] = nanstd(weighted).item()
        group_std = nanstd(rewards.view(-1, num_generations), dim=1)
        metrics["frac_reward_zero_std"][-1] = torch.isclose(group_std, torch.zeros_like(group_std)).float().mean().item()
        for _ in range(advantages.numel()):  # TRL's unit-weight advantages of these rows, appended last
            self._logs["advantages"].pop()
        self._logs["advantages"].extend(advantages.tolist())
        if local_kl is not None:
            kl_stats = self.accelerator.reduce(
                torch.stack([local_kl.sum(), completion_mask.sum().float()]), reduction="sum"
            )
            metrics["kl"].append((kl_stats[0] / kl_stats[1].clamp(min=1.0)).item())
        if self.args.conditions_on_kl_weight:
            metrics["kl_weight/mean"].append(kl_weights.mean().item())
        if mode == "train" and self._sampled_weightings is not None:
            self._sampled_weightings.append(weights.cpu())
        for i, name in enumerate(self.objective_names):
            w, r = weights[:, i], rewards_per_objective[:, i]
            metrics[f"weights/{name}/mean"].append(w.mean().item())
            self._logs["extra"][f"w_{name}"].extend(w.tolist())
            # Reward as a function of the weight: an average over random weightings hides steerability.
            for label, low, high in (("low", 0.0, 1 / 3), ("mid", 1 / 3, 2 / 3), ("high", 2 / 3, 1.01)):
                in_bin = (w >= low) & (w < high) & ~torch.isnan(r)
                metrics[f"rewards/{name}/w_{label}"].append(r[in_bin].mean().item() if in_bin.any() else math.nan)
            valid = ~torch.isnan(r)
            w_centered = w[valid] - w[valid].mean()
            variance = (w_centered**2).mean()
            slope = ((w_centered * (r[valid] - r[valid].mean())).mean() / variance).item() if variance > 1e-8 else math.nan
            metrics[f"rewards/{name}/slope_vs_weight"].append(slope)

    # ---------------------------------------------------------------- saving and resuming

    def create_model_card(self, model_name=None, dataset_name=None, tags=None):
        """TRL's model card, plus how to steer the model and its evaluated front.

        The front is `<output_dir>/front.json` if present (written by `Front.save`, e.g. by the main example),
        else the latest `fronts/step-<N>.json` of a `FrontEvaluationCallback`.
        """
        super().create_model_card(model_name=model_name, dataset_name=dataset_name, tags=tags)
        if not self.is_world_process_zero():
            return
        front_path = os.path.join(self.args.output_dir, "front.json")
        if not os.path.isfile(front_path):
            steps = glob.glob(os.path.join(self.args.output_dir, "fronts", "step-*.json"))
            front_path = max(steps, key=lambda p: int(p.rsplit("-", 1)[1][:-5])) if steps else None
        front = Front.load(front_path) if front_path else None
        model_id = self.hub_model_id or self.args.hub_model_id or self.args.output_dir
        with open(os.path.join(self.args.output_dir, "README.md"), "a") as handle:
            handle.write("\n" + steering_card_section(self.conditioning_config, model_id, front))

    def _save(self, output_dir: str | None = None, state_dict=None):
        super()._save(output_dir, state_dict)
        if self.args.should_save:  # `_save` also runs on the other ranks when they join sharded gathers
            output_dir = output_dir or self.args.output_dir
            if self.args.conditioning == "logit":
                # With `lm_head` among its targets, PEFT's default save also writes the whole (frozen) output layer;
                # the adapter alone suffices, since the base model is reloaded.
                self.accelerator.unwrap_model(self.model).save_pretrained(output_dir, save_embedding_layers=False)
            self.conditioning_config.save(output_dir)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None):
        path = os.path.join(resume_from_checkpoint, CLP_CONFIG_NAME)
        if not os.path.isfile(path):
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} has no {CLP_CONFIG_NAME}: it was not written by "
                "MultiObjectiveTrainer, so its adapter cannot be matched to the objectives."
            )
        saved = ConditioningConfig.load(path)
        if saved.objective_names != self.objective_names or saved.variant != self.args.conditioning:
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} was trained on objectives {saved.objective_names} with "
                f"conditioning={saved.variant!r}, but this trainer has {self.objective_names} with "
                f"conditioning={self.args.conditioning!r}. Resume with the same reward functions, in the same order."
            )
        if self.reward_moments is not None and saved.reward_normalization is not None:
            self.reward_moments.load_state_dict(saved.reward_normalization)
        return super()._load_from_checkpoint(resume_from_checkpoint, model)
