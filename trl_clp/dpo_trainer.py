"""`MultiObjectiveDPOTrainer`: DPO on preference data with per-objective labels or scores, one steerable policy (CLP)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from trl import DPOTrainer
from trl.trainer.dpo_trainer import DataCollatorForPreference

from .conditioned_trainer import ConditionedTrainerCore
from .conditioning.prompts import format_weighted_prompt, tokenize_left_padded
from .dpo_config import MultiObjectiveDPOConfig
from .model_card import DPO_STEP
from .preference_layouts import SIGNAL_COLUMNS, check_preference_dataset
from .preference_loss import label_preference, mixed_preference_loss, pair_scores, score_preference

# Batch keys that are not model inputs: TRL's, and the ones added here.
_NON_MODEL_KEYS = {
    "completion_mask",
    "ref_chosen_logps",
    "ref_rejected_logps",
    "weights",
    "conditioning_vectors",
    "prompts",
    "pairs_in_step",
}


@dataclass
class PreferenceSignalCollator:
    """Wraps a preference collator (TRL's `DataCollatorForPreference` by default) and adds the layout's columns.

    Each signal column becomes a float tensor `(B, m)` of the pairs, in batch order; with `keep_prompts` (the
    prompting baseline) the pairs' prompts come along as `prompts`, a list. The wrapped collator's output (chosen rows
    then rejected rows, `2B` of them) is left as it is.
    """

    collator: Any
    columns: tuple[str, ...]
    keep_prompts: bool = False

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.collator(examples)
        for column in self.columns:
            batch[column] = torch.tensor([example[column] for example in examples], dtype=torch.float32)
        if self.keep_prompts:
            batch["prompts"] = [example["prompt"] for example in examples]
        return batch


class MultiObjectiveDPOTrainer(ConditionedTrainerCore, DPOTrainer):
    """CLP on [`~trl.DPOTrainer`]: one LoRA-adapted policy π(y | x; w) for every weighting w of several objectives,
    trained from preference pairs that carry a label or a score per objective (`args.preference_layout`).

    The changes with respect to DPOTrainer are:

    1. The PEFT adapter is built from `peft_config` with one LoRA block per objective in the conditioned layers
       (`args.conditioning`), as for the online CLP trainers (`ConditionedTrainerCore`); the reference is the base
       model with the adapter disabled, so `precompute_ref_log_probs` works as in DPO.
    2. Each pair draws its weighting w from the seeded, resumable stream (`weight_distribution`); its chosen and
       rejected rows share it, and each row of the one forward pass is conditioned on its pair's w (for
       conditioning='prompt', w is written into the policy's prompt instead, and the policy scores exactly the
       completion tokens the reference scores after TRL's truncation at `max_length`).
    3. The loss is TRL's pair loss ℓ ('sigmoid', 'hinge' or 'ipo') mixed over the objectives by w: a pair with
       labels s_i contributes Σ_i w_i·1[s_i≠0]·ℓ(s_i·z), a scored pair p·ℓ(z) + (1 − p)·ℓ(−z) with p = 1[w·Δr > 0]
       or σ(w·Δr / τ) (`score_temperature`; pairs with |w·Δr| < `score_margin` left out), and the sum is divided
       by the number of pairs: the batch's, and in training the optimizer step's (every micro-batch and process,
       counted in `get_batch_samples`, as Trainer counts tokens), so that every pair weighs alike under gradient
       accumulation (`trl_clp.preference_loss`); `loss_weights` scales it as in DPO. `_compute_loss` is replaced,
       since TRL's combines the pair losses with no per-row hook; the reference log-probabilities come from TRL's
       `compute_ref_log_probs`. For Mixture-of-Experts models the router's load-balancing loss is added as in DPO
       (`router_aux_loss_coef`).
    4. Dataset checks at construction and in `evaluate` (no pairs, missing columns, lengths, label values, NaN scores,
       pairs no objective prefers); the layout's columns are kept through TRL's column filtering and collated with
       the pairs.
    5. Logged: `rewards/chosen`, `rewards/rejected`, `logps/chosen`, `logps/rejected`, `entropy`, `logits/chosen`,
       `logits/rejected`, `mean_token_accuracy`, `num_tokens` (and `aux_loss` for MoE) as in DPO, with the policy
       conditioned on each pair's w; under the pairs' weightings `rewards/margins` and `rewards/accuracies` (oriented
       to the response w prefers), `rewards/<objective>/accuracies` (z agrees with objective i alone),
       `pairs/dropped`, `weights/<objective>/mean`.
    6. `save_model` writes `clp_config.json` beside the adapter, so [`SteerableModel`] loads and steers the result
       exactly as an online-trained one.

    Args:
        model: a model id, a local path, or a `PreTrainedModel` (not a `PeftModel`: the conditioned adapter is built
            here).
        args: a [`MultiObjectiveDPOConfig`] (`objective_names` is required).
        train_dataset, eval_dataset: preference data in `args.preference_layout` (see `trl_clp.preference_layouts`).
        peft_config: the LoRA of ONE objective (rank, alpha, targets, dropout); default rank 8, alpha 16, all linear
            layers. DoRA, rsLoRA and data-driven inits are rejected (not linear in the blocks).
        Other arguments: as for DPOTrainer (there is no `ref_model`: the reference is the adapter-free base).
    """

    config_class = MultiObjectiveDPOConfig
    # Training losses are normalised over the optimizer step's pairs (`get_batch_samples`).
    loss_is_scaled_for_ga = True
    _tag_names = ["trl", "dpo", "clp", "trl-clp"]
    _card_step = DPO_STEP

    def __init__(
        self,
        model,
        args: MultiObjectiveDPOConfig | None = None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
    ):
        args = self._default_args(model, args)
        self._check_base_model(
            model, processing_class, quantization_config or (args.model_init_kwargs or {}).get("quantization_config")
        )
        self.objective_names = list(args.objective_names)
        self.num_objectives = len(self.objective_names)
        if train_dataset is not None:
            check_preference_dataset(train_dataset, args.preference_layout, self.objective_names, "training")
        self._check_eval_datasets(eval_dataset, args.preference_layout)
        lora_config = self._conditioned_lora_config(args, peft_config, self.num_objectives)
        self._signal_columns = SIGNAL_COLUMNS[args.preference_layout]

        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
            quantization_config=quantization_config,
            peft_config=lora_config,
        )
        self._attach_conditioning()
        # After TRL's init, whose reference precompute needs only the token ids.
        self.data_collator = PreferenceSignalCollator(
            self.data_collator, self._signal_columns, keep_prompts=args.conditioning == "prompt"
        )
        # The prompting baseline re-collates the policy's rows with the longer weighted prompt. They take the
        # completion tokens the reference scores, already truncated at `max_length`: truncating again would cut
        # more of the policy's completion than of the reference's, so this collator does not truncate.
        self._weighted_prompt_collator = DataCollatorForPreference(
            pad_token_id=self._tokenizer.pad_token_id, pad_to_multiple_of=args.pad_to_multiple_of
        )
        self._draw_step, self._draws_in_step = 0, 0

    def _check_eval_datasets(self, eval_dataset, layout: str) -> None:
        """`check_preference_dataset` on an evaluation dataset, or each of a dict of them (a name selects one already
        checked)."""
        if eval_dataset is None or isinstance(eval_dataset, str):
            return
        datasets = eval_dataset if isinstance(eval_dataset, dict) else {"evaluation": eval_dataset}
        for name, dataset in datasets.items():
            if dataset is not None:
                check_preference_dataset(dataset, layout, self.objective_names, name)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        # A dataset passed here, not at construction, is checked as the constructor checks its own.
        self._check_eval_datasets(eval_dataset, self.args.preference_layout)
        return super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        prompt = ["prompt"] if self.args.conditioning == "prompt" else []
        self._signature_columns = [*self._signature_columns, *self._signal_columns, *prompt]

    def _conditioning_metadata(self) -> dict:
        # Saved in clp_config.json: what the model card says the model was trained on.
        preference = {
            "method": "preference",
            "preference_layout": self.args.preference_layout,
            "loss_type": self.loss_types[0],
            "beta": self.beta,
        }
        if self.args.preference_layout == "scores":
            preference |= {"score_temperature": self.args.score_temperature, "score_margin": self.args.score_margin}
        return {"scalarization": preference}

    # ---------------------------------------------------------------- weightings of the pairs

    def _accumulation_index(self) -> int:
        """Counts the draws since the optimizer step last changed (each training micro-batch draws once)."""
        if self.state.global_step != self._draw_step:
            self._draw_step, self._draws_in_step = self.state.global_step, 0
        self._draws_in_step += 1
        return self._draws_in_step - 1

    def _draw_pair_weights(self, num_local_pairs: int, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
        """`(N, m)` the weightings of the pairs of every process and `(B, m)` this process's, one per pair."""
        num_pairs = num_local_pairs * self.accelerator.num_processes
        weights = self._draw_group_weights(num_pairs, self._weighting_stream(mode))  # (N, m)
        device = self.accelerator.device
        return weights.to(device), self._local_rows(weights, 1, num_local_pairs).to(device)

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """The micro-batches of one optimizer step and their number of pairs (summed over processes with
        `average_tokens_across_devices`): the loss divides by it, so that every pair weighs the same in the step's
        gradient, however the pairs fall into micro-batches (the last step of an epoch may hold fewer), as TRL's
        token-level losses weigh tokens through `num_items_in_batch`."""
        batch_samples, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        pairs = torch.tensor(sum(batch["input_ids"].size(0) // 2 for batch in batch_samples), device=device)
        if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
            pairs = self.accelerator.gather(pairs.reshape(1)).sum()
        return batch_samples, pairs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        mode = "train" if self.model.training else "eval"
        num_pairs = inputs["input_ids"].size(0) // 2
        all_weights, weights = self._draw_pair_weights(num_pairs, mode)
        if mode == "train" and self._sampled_weightings is not None:
            self._sampled_weightings.append(all_weights.cpu())
        # Chosen rows first, then rejected rows (TRL's collator): both halves carry the pair's weighting.
        inputs = {
            **inputs,
            "weights": weights,
            "conditioning_vectors": torch.cat([weights, weights]),
            "pairs_in_step": num_items_in_batch,  # training only (`get_batch_samples`)
        }
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    # ---------------------------------------------------------------- the loss

    def _pair_preference(self, inputs: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """p `(B,)` and the pair weights `(B,)` under the pairs' weightings, and each objective's own sign `(B, m)` in
        {−1, 0, 1}."""
        weights = inputs["weights"]
        if self.args.preference_layout == "labels":
            labels = inputs["objective_labels"].to(weights.device)
            return (*label_preference(labels, weights), labels)
        chosen, rejected = inputs["chosen_scores"].to(weights.device), inputs["rejected_scores"].to(weights.device)
        preference = score_preference(chosen, rejected, weights, self.args.score_margin, self.args.score_temperature)
        return (*preference, torch.sign(chosen - rejected))

    def _with_weighted_prompts(self, inputs: dict) -> dict:
        """The batch re-collated with each pair's weighting written into its prompt (the prompting baseline), with
        the completion tokens of `inputs`: those the reference scores, after TRL's truncation at `max_length` (the
        policy's rows are longer by the weighting's text)."""
        prompts = [
            format_weighted_prompt(prompt, w.tolist(), self.objective_names, self.args.prompt_template)
            for prompt, w in zip(inputs["prompts"], inputs["weights"], strict=True)
        ]
        encoded = tokenize_left_padded(self.processing_class, prompts)
        prompt_ids = [
            ids[mask.bool()].tolist()
            for ids, mask in zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
        ]
        completions = [
            ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["completion_mask"], strict=True)
        ]
        num_pairs = len(prompts)
        examples = [
            {"prompt_ids": prompt_ids[b], "chosen_ids": completions[b], "rejected_ids": completions[num_pairs + b]}
            for b in range(num_pairs)
        ]
        device = inputs["input_ids"].device
        return {key: value.to(device) for key, value in self._weighted_prompt_collator(examples).items()}

    def _compute_loss(self, model, inputs, return_outputs):
        mode = "train" if self.model.training else "eval"
        # The reference sees the prompt as written in the data: it does not depend on w, so it can be precomputed.
        policy_inputs = self._with_weighted_prompts(inputs) if self.args.conditioning == "prompt" else inputs
        model_kwargs = {
            k: v for k, v in policy_inputs.items() if k not in _NON_MODEL_KEYS and k not in self._signal_columns
        }
        completion_mask = policy_inputs["completion_mask"]
        seq_len = completion_mask.size(1) - 1
        labels = policy_inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        if self.aux_loss_enabled:  # MoE: the router's load-balancing loss, as TRL adds it
            model_kwargs["output_router_logits"] = True
        outputs = model(**model_kwargs, labels=labels, use_cache=False, fused_lm_head=True)  # rows conditioned
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)  # (2B,)
        chosen_logps, rejected_logps = logps.chunk(2)
        if self.precompute_ref_logps:
            ref_chosen_logps, ref_rejected_logps = inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        else:  # the adapter-free base, whatever the weighting
            ref_inputs = {
                k: v for k, v in inputs.items() if k not in _NON_MODEL_KEYS and k not in self._signal_columns
            }
            ref_chosen_logps, ref_rejected_logps = self.compute_ref_log_probs(
                self.model, {**ref_inputs, "completion_mask": inputs["completion_mask"]}
            )
        chosen_logratios = chosen_logps - ref_chosen_logps  # (B,)
        rejected_logratios = rejected_logps - ref_rejected_logps
        chosen_lengths, rejected_lengths = completion_mask.sum(dim=1).chunk(2)
        loss_type = self.loss_types[0]
        scores = pair_scores(
            chosen_logratios, rejected_logratios, chosen_lengths, rejected_lengths, loss_type, self.beta
        )  # (B,) z
        preference, pair_weight, objective_signs = self._pair_preference(inputs)
        kept = pair_weight > 0
        # `loss_weights` scales the loss as in DPO (one loss type here, so one weight).
        loss = mixed_preference_loss(scores, preference, pair_weight, loss_type, self.beta) * self.loss_weights[0]
        if inputs.get("pairs_in_step") is not None:
            # The mean over this micro-batch's pairs becomes its share of the mean over the optimizer step's pairs;
            # DDP averages gradients over processes, hence their number when the count spans them (as Trainer does).
            processes = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
            loss = loss * len(pair_weight) * processes / inputs["pairs_in_step"]
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
            self._metrics[mode]["aux_loss"].append(
                self.accelerator.gather_for_metrics(outputs.aux_loss.detach()).mean().item()
            )

        self._log_token_metrics(mode, outputs, completion_mask[:, 1:], policy_inputs["attention_mask"])
        self._log_preference_metrics(
            mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, preference, kept, objective_signs
        )
        gather = self.accelerator.gather_for_metrics
        self._metrics[mode]["pairs/dropped"].append(gather(1 - kept.float()).mean().item())
        for i, name in enumerate(self.objective_names):
            self._metrics[mode][f"weights/{name}/mean"].append(gather(inputs["weights"][:, i]).mean().item())
        if return_outputs:  # TRL's deprecated path for `compute_metrics`: the logits, from one more forward
            with torch.no_grad():
                outputs = model(**model_kwargs)
            return loss, outputs
        return loss

    # Metrics are gathered per pair, `(B, ...)`, with `gather_for_metrics` as TRL gathers them: at the end of an
    # uneven evaluation it drops the pairs repeated to pad the last batches. Sums are taken after the gather.

    def _log_token_metrics(self, mode, outputs, shift_completion_mask, attention_mask):
        """DPO's token-level metrics, from the fused head's per-token outputs `(2B, T)` of the conditioned policy:
        `entropy`, `logits/chosen`, `logits/rejected` (mean over completion tokens), `mean_token_accuracy` (the
        chosen completions' tokens that are the policy's top-1 prediction) and `num_tokens` (seen in training)."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        seq_len = shift_completion_mask.size(1)
        mask = shift_completion_mask.float()  # (2B, T)
        entropy = (outputs.entropy[:, -seq_len:].detach() * mask).sum(1).chunk(2)  # chosen, rejected: (B,) each
        logits = (outputs.mean_logits[:, -seq_len:].detach() * mask).sum(1).chunk(2)
        tokens = mask.sum(1).chunk(2)
        chosen_top1 = (outputs.is_top1[:, -seq_len:].float() * mask).sum(1).chunk(2)[0]
        per_pair = torch.stack(
            [entropy[0] + entropy[1], tokens[0] + tokens[1], logits[0], tokens[0], logits[1], tokens[1], chosen_top1],
            dim=1,
        ).float()  # (B, 7)
        sums = gather(per_pair).sum(0)
        metrics["entropy"].append((sums[0] / sums[1].clamp(min=1)).item())
        metrics["logits/chosen"].append((sums[2] / sums[3].clamp(min=1)).item())
        metrics["logits/rejected"].append((sums[4] / sums[5].clamp(min=1)).item())
        metrics["mean_token_accuracy"].append((sums[6] / sums[3].clamp(min=1)).item())
        if mode == "train":
            chosen_tokens, rejected_tokens = attention_mask.sum(1).chunk(2)  # (B,) each
            self._total_train_tokens += gather(chosen_tokens + rejected_tokens).sum().item() // self._tp_size
        metrics["num_tokens"] = [self._total_train_tokens]

    def _log_preference_metrics(
        self, mode, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, preference, kept, signs
    ):
        """DPO's metrics; margins and accuracies oriented to the response each pair's weighting prefers."""
        gather = self.accelerator.gather_for_metrics
        metrics = self._metrics[mode]
        chosen_rewards = self.beta * chosen_logratios.detach()  # (B,)
        rejected_rewards = self.beta * rejected_logratios.detach()
        margins = chosen_rewards - rejected_rewards
        metrics["rewards/chosen"].append(gather(chosen_rewards).mean().item())
        metrics["rewards/rejected"].append(gather(rejected_rewards).mean().item())
        metrics["logps/chosen"].append(gather(chosen_logps.detach()).mean().item())
        metrics["logps/rejected"].append(gather(rejected_logps.detach()).mean().item())
        orientation = torch.sign(2 * preference - 1) * kept  # (B,) +1: w prefers chosen, −1 rejected, 0 neither
        decided = orientation != 0
        signs = signs.to(margins.device)
        per_pair = torch.cat(
            [
                (orientation * margins).unsqueeze(1),
                (decided & (torch.sign(margins) == torch.sign(orientation))).unsqueeze(1),
                decided.unsqueeze(1),
                (torch.sign(margins).unsqueeze(1) == signs) & (signs != 0),  # (B, m) z agrees with objective i
                signs != 0,  # (B, m) objective i has an opinion
            ],
            dim=1,
        ).float()  # (B, 3 + 2m)
        sums = gather(per_pair).sum(0)
        metrics["rewards/margins"].append((sums[0] / sums[2].clamp(min=1)).item())
        metrics["rewards/accuracies"].append((sums[1] / sums[2].clamp(min=1)).item())
        m = len(self.objective_names)
        agree, voiced = sums[3 : 3 + m], sums[3 + m :]
        for i, name in enumerate(self.objective_names):
            metrics[f"rewards/{name}/accuracies"].append((agree[i] / voiced[i].clamp(min=1)).item())
