"""What every CLP trainer shares, online (RLOO, GRPO) or offline (DPO): `ConditionedTrainerCore`.

The core builds the conditioned adapter (one LoRA block per objective), draws each row's weighting from the seeded,
resumable stream, keeps the rows' weightings set through a training step (backward included), and saves and checks
the conditioning metadata (`clp_config.json`, the model card). What a trainer does with the weightings (generation and
rewards online, the preference loss offline) lives in its own module: `trl_clp.online_trainer.ConditionedTrainerMixin` for
the online trainers, `trl_clp.dpo_trainer.MultiObjectiveDPOTrainer` for DPO.
"""

from __future__ import annotations

import glob
import os
import shutil
import warnings

import torch
from accelerate.utils import is_peft_model
from peft import LoraConfig
from torch import nn
from transformers import BitsAndBytesConfig, ProcessorMixin
from transformers.trainer_utils import get_last_checkpoint
from trl.data_utils import is_conversational
from trl.trainer.utils import get_config_model_id

from .callbacks import WeightingHistogramCallback
from .conditioning.config import CLP_CONFIG_NAME, ConditioningConfig
from .conditioning.model import (
    attach_conditioning,
    build_conditioned_lora_config,
    check_linear_lora_config,
    resolve_conditioned_targets,
)
from .conditioning_fields import SharedConditioningFields
from .evaluation import Front
from .extras import require
from .gguf import check_not_gguf
from .guards import check_free_disk_space, check_output_dir_writable, checkpoint_bytes
from .model_card import CLP_PAPER, RLOO_STEP, finish_model_card
from .sampling import one_hot_probability, sample_group_weights

DEFAULT_LORA_CONFIG = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
# Stream keys keep training and evaluation weight draws apart.
TRAIN_STREAM, EVAL_STREAM = 0, 1


class ConditionedTrainerCore:
    """
    The conditioning shared by every CLP trainer. Mixed in ahead of a TRL trainer class, it wraps the trainer's
    methods with `super()`:

    1. `_conditioned_lora_config` (before the TRL trainer's `__init__`) turns the LoRA of one objective into the
       conditioned adapter's config, and `_attach_conditioning` (after it) attaches the per-row mixing of the blocks
       (`trl_clp.conditioning.layer`), checks free disk space and adds the weighting histograms for trackers.
    2. `_draw_row_weights` draws the weightings of this process's rows per global group from a stream seeded by
       `(args.seed, micro-step)`: identical on every rank and continued on resume.
    3. `compute_loss` conditions the forward on `inputs["conditioning_vectors"]`; the weighting stays set through
       backward (which gradient checkpointing re-runs) and is cleared once the training or prediction step is done.
    4. `save_model` writes `clp_config.json` beside the adapter and the model card says how to steer the model;
       `train(resume_from_checkpoint=...)` checks that the checkpoint was trained on the same objectives.

    A trainer class sets `config_class` (a `SharedConditioningFields` subclass) and `objective_names`, and implements
    `_accumulation_index` (which micro-step of the optimizer step this is). It may extend the saved metadata
    (`_conditioning_metadata`) and what a resumed run restores (`_restore_training_state`).
    """

    config_class: type = SharedConditioningFields
    _name = "CLP"
    _paper = CLP_PAPER
    _card_step = RLOO_STEP  # the optimisation step the model card names after the CLP paper

    # ---------------------------------------------------------------- construction

    def _default_args(self, model, args):
        """`args`, or a default config named after the model as TRL's trainers name theirs; checked to be ours."""
        if args is None:
            model_name = model if isinstance(model, str) else get_config_model_id(model.config)
            args = self.config_class(f"{model_name.split('/')[-1]}-CLP")
        if not isinstance(args, self.config_class):
            raise TypeError(
                f"`args` must be a `{self.config_class.__name__}`, got {type(args).__name__}: it carries the weighting "
                "distribution and conditioning variant."
            )
        return args

    def _check_base_model(self, model, processing_class, quantization_config=None) -> None:
        if isinstance(model, str):
            check_not_gguf(model)  # TRL's loading would fail with "Unrecognized model"
        if isinstance(quantization_config, BitsAndBytesConfig):
            require("bitsandbytes", "quantization", "a 4-bit or 8-bit base model (`BitsAndBytesConfig`)")
        if isinstance(model, nn.Module) and is_peft_model(model):
            raise ValueError(
                f"Pass the base model and a `peft_config`: {type(self).__name__} builds the conditioned adapter itself. "
                "To continue from a trained CLP adapter, use `resume_from_checkpoint`."
            )
        if isinstance(processing_class, ProcessorMixin):
            raise ValueError(
                f"{type(self).__name__} supports text-only models; pass a tokenizer as `processing_class`."
            )

    def _conditioned_lora_config(self, args, peft_config: LoraConfig | None, vector_size: int) -> LoraConfig:
        """The PEFT config of the conditioned adapter, from `peft_config`, the LoRA of ONE objective (default rank 8,
        alpha 16, all linear layers), for conditioning vectors of `vector_size` entries mixed with
        `args.conditioning_features`; also checks that `output_dir` can be written."""
        peft_config = peft_config if peft_config is not None else DEFAULT_LORA_CONFIG
        check_linear_lora_config(peft_config)
        if args.should_save:
            check_output_dir_writable(args.output_dir)
        self._objective_lora_config = peft_config
        self._vector_size = vector_size
        self._conditioned_targets = resolve_conditioned_targets(args.conditioning, args.conditioned_target_modules)
        return build_conditioned_lora_config(
            peft_config, args.conditioning, self._conditioned_targets, vector_size, args.conditioning_features
        )

    def _attach_conditioning(self) -> None:
        """After the TRL trainer's `__init__`: the per-row mixing, the disk-space check, the weighting histograms."""
        self.conditioner = attach_conditioning(
            self.model,
            self._objective_lora_config,
            self.args.conditioning,
            self._conditioned_targets,
            self._vector_size,
            self.args.conditioning_features,
        )
        if self.args.should_save:
            check_free_disk_space(self.args.output_dir, checkpoint_bytes(self.model, self.args))
        # (N, m) per draw since the last log, kept only for the trackers' weighting histograms.
        self._sampled_weightings: list[torch.Tensor] | None = None
        if {"tensorboard", "wandb", "trackio"} & set(self.args.report_to or []):
            self._sampled_weightings = []
            self.add_callback(WeightingHistogramCallback(self))
        self._eval_draws = 0

    def pop_sampled_weightings(self) -> torch.Tensor | None:
        """`(N, m)` the weightings of the rows drawn since the last call, or None if there were none."""
        if not self._sampled_weightings:  # None (no histogram tracker) or nothing drawn since the last log
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
            conditioning_features=list(self.conditioner.features),
            prompt_template=self.args.prompt_template,
            **self._conditioning_metadata(),
        )

    def _conditioning_metadata(self) -> dict:
        """Hook: further `ConditioningConfig` fields the trainer saves (KL weight, reward statistics, ...)."""
        return {}

    # ---------------------------------------------------------------- weightings of the rows

    def _accumulation_index(self) -> int:
        """Hook: which micro-step of the current optimizer step is being drawn for (0 … accumulation steps − 1)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `_accumulation_index`.")

    def _weighting_stream(self, mode: str) -> tuple[int, int]:
        """The key of the next draw: training draws follow the micro-step (so a resumed run continues the stream);
        evaluation draws restart at each evaluation, so that evaluations compare."""
        if mode == "train":
            accumulation = self.args.gradient_accumulation_steps
            return TRAIN_STREAM, self.state.global_step * accumulation + self._accumulation_index()
        stream = (EVAL_STREAM, self._eval_draws)
        self._eval_draws += 1
        return stream

    def _draw_group_weights(self, num_groups: int, stream: tuple[int, int]) -> torch.Tensor:
        """`(G, m)` one weighting per global group, from the configured distribution and the seeded stream.

        With a weighting schedule, each group is a one-hot corner with the probability p of the current optimizer
        step (`one_hot_probability`; the same on every rank and, from the restored step, on resume), logged as
        `weights/one_hot_probability`; evaluation draws use the schedule's end, so that evaluations compare.
        """
        args = self.args
        corner_probability = 0.0
        if args.has_weighting_schedule:
            train = stream[0] == TRAIN_STREAM
            corner_probability = args.one_hot_final_probability
            if train:
                corner_probability = one_hot_probability(
                    self.state.global_step,
                    self.state.max_steps,
                    args.one_hot_fraction,
                    args.one_hot_anneal_fraction,
                    args.one_hot_final_probability,
                )
            self._metrics["train" if train else "eval"]["weights/one_hot_probability"].append(corner_probability)
        return sample_group_weights(
            args.weight_distribution,
            num_groups,
            len(self.objective_names),
            args.seed,
            stream,
            concentration=args.dirichlet_concentration,
            fixed_weights=args.parsed_fixed_weights,
            one_hot_probability=corner_probability,
        )

    def _local_rows(self, per_group: torch.Tensor, group_size: int, num_local_rows: int) -> torch.Tensor:
        """This process's rows of a per-group tensor `(G, ...)`, each group repeated `group_size` times: `(L, ...)`."""
        start = self.accelerator.process_index * num_local_rows
        return per_group.repeat_interleave(group_size, dim=0)[start : start + num_local_rows]

    # ---------------------------------------------------------------- conditioning of the forward passes

    def training_step(self, model, inputs, num_items_in_batch):
        # compute_loss sets the rows' weightings; they must stay set through backward, which re-runs the forward
        # under gradient checkpointing. Cleared here, once backward is done.
        try:
            return super().training_step(model, inputs, num_items_in_batch)
        finally:
            self.conditioner.clear()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.conditioner.set_conditioning_vectors(inputs["conditioning_vectors"])
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
        chat = self.processing_class.chat_template is not None or (
            self.train_dataset is not None and is_conversational(next(iter(self.train_dataset)))
        )
        with open(card_path, "w") as handle:
            handle.write(
                finish_model_card(
                    card, self.conditioning_config, model_id, front, base_model, self._card_step, chat=chat
                )
            )

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
        """`Trainer.train`, after checking the checkpoint to resume from and restoring its training state.

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
        """Check that `resume_from_checkpoint` was trained on these objectives; restore its training state."""
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
        if saved.conditioning_features != list(self.conditioner.features):
            raise ValueError(
                f"Checkpoint {resume_from_checkpoint!r} was trained with conditioning_features="
                f"{saved.conditioning_features}, but this trainer has {list(self.conditioner.features)}: its adapter "
                f"has other blocks. Resume with `conditioning_features` {saved.conditioning_features}."
            )
        self._restore_training_state(saved, resume_from_checkpoint)

    def _restore_training_state(self, saved: ConditioningConfig, resume_from_checkpoint: str) -> None:
        """Hook: restore what the trainer keeps in `clp_config.json` beyond the conditioning (e.g. reward statistics)."""
