"""The part of a CLP model's card that tells a reader what the model trades off and how to steer it."""

from __future__ import annotations

import os
import re
import textwrap

from .conditioning.config import ConditioningConfig
from .evaluation import Front

# What TRL's card cites as "the method" (`Trainer._paper`); the trainer optimises with RLOO, which the card also names.
CLP_PAPER = {
    "title": "Conditional Language Policy: A General Framework for Steerable Multi-Objective Finetuning",
    "id": "2407.15762",
    # docstyle-ignore
    "citation": textwrap.dedent("""\
        @inproceedings{wang2024conditional,
            title        = {{Conditional Language Policy: A General Framework for Steerable Multi-Objective Finetuning}},
            author       = {Kaiwen Wang and Rahul Kidambi and Ryan Sullivan and Alekh Agarwal and Christoph Dann and Andrea Michi and Marco Gelmi and Yunxuan Li and Raghav Gupta and Avinava Dubey and Alexandre Ram{\\'{e}} and Johan Ferret and Geoffrey Cideron and Le Hou and Hongkun Yu and Amr Ahmed and Aranyak Mehta and L{\\'{e}}onard Hussenot and Olivier Bachem and Edouard Leurent},
            year         = 2024,
            booktitle    = {Findings of the Association for Computational Linguistics: EMNLP 2024},
            eprint       = {2407.15762},
            archivePrefix = {arXiv},
        }"""),
}
RLOO_PAPER_ID = "2402.14740"
# The optimisation step the card names after the CLP paper, per trainer (`ConditionedTrainerCore._card_step`).
RLOO_STEP = (
    f"RLOO ([Ahmadian et al., 2024](https://huggingface.co/papers/{RLOO_PAPER_ID})) as its policy-gradient step"
)
GRPO_STEP = "GRPO ([Shao et al., 2024](https://huggingface.co/papers/2402.03300)) as its policy-gradient step"
DPO_STEP = "DPO ([Rafailov et al., 2023](https://huggingface.co/papers/2305.18290)) on per-objective preferences"


def finish_model_card(
    card: str,
    config: ConditioningConfig,
    model_id: str,
    front: Front | None = None,
    base_model: str | None = None,
    step: str = RLOO_STEP,
    *,
    chat: bool = False,
) -> str:
    """TRL's model card made right for a CLP adapter.

    TRL's quick start loads the model with `pipeline`, which would apply the adapter with the uniform weighting: it
    is replaced by `steering_card_section`. A local base model (a path, which TRL's card renders as "None") is named.

    Args:
        card: the text TRL's `create_model_card` wrote.
        config, model_id, front, chat: as for `steering_card_section`.
        base_model: the base model's id or path.
        step: the optimisation step named after the CLP paper (`RLOO_STEP`, `GRPO_STEP`, `DPO_STEP`).
    """
    section = steering_card_section(config, model_id, front, chat=chat)
    quick_start = re.compile(r"## Quick start\n.*?(?=\n## )", re.DOTALL)
    card = (
        quick_start.sub(lambda _: section.rstrip("\n") + "\n", card, count=1)
        if quick_start.search(card)
        else (card + "\n" + section)
    )
    if not base_model:
        shown = "a base model given in memory"
    elif os.path.isdir(base_model):
        shown = f"`{os.path.basename(os.path.normpath(base_model))}` (a local model)"
    else:
        shown = f"[{base_model}](https://huggingface.co/{base_model})"
    card = card.replace("[None](https://huggingface.co/None)", shown)
    paper_link = f"(https://huggingface.co/papers/{CLP_PAPER['id']})."
    card = card.replace(paper_link, paper_link[:-1] + f", with {step}.", 1)
    return card


def scalarization_note(config: ConditioningConfig) -> str:
    """One sentence: how the rewards were scalarised in training."""
    scalarization = config.scalarization
    if scalarization["method"] == "linear":
        return "Trained with the linear scalarisation `w·R` (the weighted sum of the rewards).\n"
    if scalarization["method"] == "preference":
        return preference_note(scalarization)
    z = ", ".join("n/a" if v is None else f"{v:.4g}" for v in scalarization["ideal_point"])
    source = "given" if scalarization["given"] else "the running per-objective maxima at save time"
    augmented = f" − {scalarization['augmentation']}·Σ_i (z_i − R_i)" if scalarization["augmentation"] else ""
    return (
        f"Trained with the Tchebycheff scalarisation `−max_i w_i (z_i − R_i){augmented}`, ideal point z = ({z}) "
        f"({source}): a weighting asks for the point of the front where the weighted shortfalls from z are equal.\n"
    )


# The pair loss ℓ of each DPO `loss_type` DPO-CLP accepts, as the card names it.
_PAIR_LOSSES = {"sigmoid": "DPO's sigmoid loss", "hinge": "the hinge loss (SLiC)", "ipo": "the IPO loss"}


def preference_note(scalarization: dict) -> str:
    """One paragraph: the DPO-CLP objective a model was trained with, from its `clp_config.json` record
    (`MultiObjectiveDPOTrainer._conditioning_metadata`: layout, loss type, β, and for scores the temperature and
    margin). Files written before the layout was recorded get a general sentence."""
    if "preference_layout" not in scalarization:
        return (
            "Trained from preference pairs with per-objective labels or scores: under a weighting w, each pair's DPO "
            "loss mixes the objectives' preferences with the weights w.\n"
        )
    loss = f"{_PAIR_LOSSES[scalarization['loss_type']]} ℓ, β = {scalarization['beta']:g}"
    if scalarization["preference_layout"] == "labels":
        return (
            f"Trained with DPO-CLP ({loss}) on preference pairs labelled per objective (s_i = +1, −1 or 0 when "
            "objective i prefers the first response, the second, or neither): under a weighting w a pair contributes "
            "Σ_i w_i·1[s_i≠0]·ℓ(s_i·z), z the policy's DPO margin, normalised over the batch: a weighting w asks for "
            "the policy minimising Σ_i w_i·π_i·L_i, L_i objective i's DPO loss on the pairs it labels and π_i the "
            "share of pairs it labels.\n"
        )
    margin = scalarization.get("score_margin") or 0.0
    left_out = f"; pairs with |w·Δr| < {margin:g} are left out" if margin else ""
    temperature = scalarization.get("score_temperature")
    if temperature is None:
        return (
            f"Trained with DPO-CLP ({loss}) on preference pairs scored per objective: under a weighting w each pair "
            "is ordered by the sign of its weighted score difference w·Δr (a hard label: DPO on the pairs as "
            f"binarised by w·r; ties left out{left_out}).\n"
        )
    return (
        f"Trained with DPO-CLP ({loss}) on preference pairs scored per objective: under a weighting w each pair's "
        f"preference is the soft p = σ(w·Δr / τ), τ = {temperature:g} (the Bradley–Terry probability of the weighted "
        f"score w·r{left_out}), and its loss p·ℓ(z) + (1 − p)·ℓ(−z).\n"
    )


def steering_card_section(
    config: ConditioningConfig, model_id: str, front: Front | None = None, *, chat: bool = False
) -> str:
    """Markdown: the objectives, the conditioning, a runnable steering snippet and, if given, the evaluated front.

    Args:
        config: the adapter's conditioning metadata.
        model_id: the hub id or path the reader loads the model from.
        front: an evaluation of the model over a grid of weightings (`evaluate_front`, `FrontEvaluationCallback`).
        chat: a chat model (trained on conversations, or with a chat template): the snippet steers a conversation
            through `generate_from_prompts`, which applies the chat template as training did; otherwise it tokenizes
            text.
    """
    names = config.objective_names
    example = [round(1 / len(names), 2)] * len(names)
    example[-1] = round(1 - sum(example[:-1]), 2)
    kl_note = ""
    if config.min_kl_weight is not None:
        kl_note = (
            f"\nThe model is also conditioned on the KL weight α (any α ≥ {config.min_kl_weight}): pass "
            "`kl_weight=` to `generate` or `condition`; a larger α stays closer to the base model.\n"
        )
    weights_line = (
        f"weights = torch.tensor([{[1.0] + [0.0] * (len(names) - 1)}, {example}])  # one weighting per row: {names}"
    )
    if chat:
        snippet = [
            'conversation = [{"role": "user", "content": "Your prompt"}]',
            weights_line,
            "completions = steer.generate_from_prompts([conversation] * 2, weights, max_new_tokens=64, do_sample=True)",
        ]
    else:
        snippet = [
            'batch = steer.tokenizer(["Your prompt"] * 2, return_tensors="pt", padding=True, padding_side="left")',
            weights_line,
            "out = steer.generate(**batch, weights=weights, max_new_tokens=64, do_sample=True)",
        ]
    lines = [
        "## Steering this model",
        "",
        (
            f"This is a [Conditional Language Policy](https://huggingface.co/papers/2407.15762) trained with "
            f"trl-clp: one adapter steerable at inference time across {len(names)} objectives, "
            f"**{', '.join(names)}**, by a weighting on the simplex (non-negative, summing to 1), chosen per request. "
            f"Conditioning: `{config.conditioning}`"
        )
        + (f", {len(config.conditioned_modules)} conditioned LoRA layers" if config.conditioned_modules else "")
        + (
            f" with blocks for the features {', '.join(f'`{f}`' for f in config.conditioning_features)}."
            if config.conditioning_features != ["linear"]
            else "."
        ),
        scalarization_note(config),
        kl_note,
        "```python",
        "import torch",
        "from trl_clp import SteerableModel",
        "",
        f'steer = SteerableModel.from_pretrained("{model_id}")',
        *snippet,
        "```",
        "",
        (
            "A plain LoRA for one weighting (to serve with vLLM or any PEFT loader): "
            f'`steer.export_lora("lora-w", weights=torch.tensor({example}))`. The adapter in this repository, loaded '
            "with plain `PeftModel.from_pretrained`, gives the uniform weighting only: load it with `SteerableModel`."
        ),
    ]
    if front is not None:
        lines += [
            "",
            "## Evaluated front",
            "",
            (
                f"Mean reward per objective at each weighting, KL to the base model and V = w·R − α·KL (α = "
                f"{front.kl_weight}), {front.results[0].num_completions} completions per weighting:"
            ),
            "",
            "| weights | " + " | ".join(front.objective_names) + " | KL | V |",
            "|" + "---|" * (len(front.objective_names) + 3),
        ]
        for result in front.results:
            rewards = " | ".join(f"{result.rewards[name]:.4f}" for name in front.objective_names)
            weights = "(" + ", ".join(f"{w:.2f}" for w in result.weights) + ")"
            lines.append(f"| {weights} | {rewards} | {result.kl:.3f} | {result.value:.4f} |")
    return "\n".join(lines) + "\n"
