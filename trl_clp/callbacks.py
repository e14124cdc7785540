"""Trainer callbacks that watch steerability during training: the evaluated front (`FrontEvaluationCallback`) and
the sampled weightings as tracker histograms (`WeightingHistogramCallback`)."""

from __future__ import annotations

import json
import os

import torch
from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback, TrackioCallback, WandbCallback
from trl.models import unwrap_model_for_generation

from .conditioning.steerable import SteerableModel
from .evaluation import Front, evaluate_front
from .sampling import simplex_grid


class FrontEvaluationCallback(TrainerCallback):
    """Evaluate the policy of a `MultiObjectiveTrainer` over a weight grid every `eval_every_steps` steps.

    Each evaluation logs, through the trainer's metrics (so to every configured tracker at the next logging step):
    `front/hypervolume`, `front/<objective>/range`, `front/<objective>/rank_correlation` and
    `front/monotonicity_violations`, and writes the whole front to `<output_dir>/fronts/step-<N>.json` (and `.csv`).
    Every process takes part (each samples a share of the batches, the results are gathered, every process scores
    them and holds the same front), as ZeRO-3 and FSDP need; only the main process writes files. The torch RNG is
    forked, so training samples the same completions with or without it, and the front equals a one-process
    `evaluate_front` on the same prompts and seed.

    Args:
        trainer: the `MultiObjectiveTrainer`.
        prompts: held-out prompts.
        reward_funcs: one callable per objective, in the trainer's order.
        weightings: `(K, m)` grid; default: a simplex lattice with 5 points per edge.
        eval_every_steps: evaluation period in optimizer steps.
        reference_point: `(m,)` hypervolume reference. Default: the per-objective minimum of the first evaluated
            front, minus 1e-6; it is then kept fixed and written to `fronts/reference_point.json`.
        num_samples, max_new_tokens, batch_size, seed, **generation_kwargs: as in `evaluate_front`; sampling is the
            trainer's (its `temperature`, `top_p`, `top_k`, `min_p`, `repetition_penalty`) unless given here.
    """

    def __init__(
        self,
        trainer,
        prompts: list[str],
        reward_funcs: list,
        weightings: torch.Tensor | None = None,
        eval_every_steps: int = 50,
        reference_point: list[float] | None = None,
        num_samples: int = 1,
        max_new_tokens: int | None = None,
        batch_size: int = 64,
        seed: int = 0,
        **generation_kwargs,
    ):
        if len(reward_funcs) != trainer.num_objectives:
            raise ValueError(
                f"Give one reward function per objective ({trainer.objective_names}), got {len(reward_funcs)}."
            )
        if eval_every_steps < 1:
            raise ValueError(f"`eval_every_steps` must be >= 1, got {eval_every_steps}.")
        self.trainer = trainer
        self.prompts = prompts
        self.reward_funcs = reward_funcs
        self.weightings = weightings if weightings is not None else simplex_grid(trainer.num_objectives, 5)
        self.eval_every_steps = eval_every_steps
        self.reference_point = reference_point
        self.evaluation_kwargs = dict(
            num_samples=num_samples,
            max_new_tokens=max_new_tokens or trainer.args.max_completion_length,
            batch_size=batch_size,
            seed=seed,
            # Sampled as training samples, so the front shows the policy being trained.
            temperature=trainer.args.temperature,
            top_p=trainer.args.top_p,
            top_k=trainer.args.top_k,
            min_p=trainer.args.min_p,
            repetition_penalty=trainer.args.repetition_penalty,
        )
        self.evaluation_kwargs.update(generation_kwargs)
        self.fronts: dict[int, Front] = {}

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.eval_every_steps:
            return
        trainer = self.trainer
        # Every process evaluates (its share of the batches, then all results gathered): under ZeRO-3 and FSDP a
        # forward needs every process. Parameters are gathered for generation as TRL gathers them for training's.
        device = trainer.accelerator.device
        with (
            unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=args.ds3_gather_for_generation,
                gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs,
            ) as model,
            trainer._dist.summon_full_params(trainer.model_wrapped, recurse=False),
            # The evaluation seeds its own sampling; training's RNG (CPU and this GPU) continues as without it.
            torch.random.fork_rng(devices=[device] if device.type == "cuda" else []),
        ):
            steer = SteerableModel(model, trainer.conditioning_config, trainer.processing_class, trainer.conditioner)
            was_training = model.training
            model.eval()
            try:
                front = evaluate_front(
                    steer,
                    trainer.processing_class,
                    self.prompts,
                    self.reward_funcs,
                    self.weightings,
                    accelerator=trainer.accelerator,
                    **self.evaluation_kwargs,
                )
            finally:
                model.train(was_training)
        self.fronts[state.global_step] = front
        directory = os.path.join(args.output_dir, "fronts")
        if self.reference_point is None:
            self.reference_point = (front.rewards().min(0).values - 1e-6).tolist()
            if state.is_world_process_zero:
                os.makedirs(directory, exist_ok=True)
                with open(os.path.join(directory, "reference_point.json"), "w") as handle:
                    json.dump({"reference_point": self.reference_point}, handle)
        if state.is_world_process_zero:
            front.save(directory, stem=f"step-{state.global_step}")

        metrics = trainer._metrics["train"]  # averaged and logged with TRL's metrics at the next logging step
        metrics["front/hypervolume"].append(front.hypervolume(self.reference_point))
        summary = front.steerability()
        metrics["front/monotonicity_violations"].append(float(summary["monotonicity_violations"]))
        for name, spread, correlation in zip(
            front.objective_names, summary["range"], summary["rank_correlation"], strict=True
        ):
            metrics[f"front/{name}/range"].append(spread)
            metrics[f"front/{name}/rank_correlation"].append(correlation)  # NaN (skipped in logs) if flat


class WeightingHistogramCallback(TrainerCallback):
    """Log the weightings sampled since the last logging step as one histogram per objective.

    Scalars (`weights/<objective>/mean`, per-objective rewards) reach every tracker through TRL's metrics; this adds
    the distribution, which shows whether every region of the simplex is trained: `train/weights/<objective>` in
    TensorBoard (`add_histogram`), Weights & Biases (`wandb.Histogram`) and trackio (`trackio.Histogram`). The
    `MultiObjectiveTrainer` adds it by itself when `report_to` names one of these trackers.
    """

    def __init__(self, trainer):
        self.trainer = trainer

    def on_log(self, args, state, control, logs=None, **kwargs):
        weights = self.trainer.pop_sampled_weightings()  # (N, m) since the last log, or None
        if weights is None or not state.is_world_process_zero:
            return
        columns = {f"train/weights/{name}": weights[:, i] for i, name in enumerate(self.trainer.objective_names)}
        for callback in self.trainer.callback_handler.callbacks:
            if isinstance(callback, TensorBoardCallback) and callback.tb_writer is not None:
                for tag, values in columns.items():
                    callback.tb_writer.add_histogram(tag, values, state.global_step, bins=20)
                callback.tb_writer.flush()
            elif isinstance(callback, WandbCallback) and callback._wandb is not None and callback._initialized:
                histograms = {tag: callback._wandb.Histogram(values.numpy()) for tag, values in columns.items()}
                callback._wandb.log({**histograms, "train/global_step": state.global_step})
            elif isinstance(callback, TrackioCallback) and callback._trackio is not None and callback._initialized:
                histograms = {tag: callback._trackio.Histogram(values.numpy()) for tag, values in columns.items()}
                callback._trackio.log({**histograms, "train/global_step": state.global_step})
