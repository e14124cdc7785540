"""The part of a CLP model's card that tells a reader what the model trades off and how to steer it."""

from __future__ import annotations

from .conditioning.config import ConditioningConfig
from .evaluation import Front


def scalarization_note(config: ConditioningConfig) -> str:
    """One sentence: how the rewards were scalarised in training."""
    scalarization = config.scalarization
    if scalarization["method"] == "linear":
        return "Trained with the linear scalarisation `w·R` (the weighted sum of the rewards).\n"
    z = ", ".join("n/a" if v is None else f"{v:.4g}" for v in scalarization["ideal_point"])
    source = "given" if scalarization["given"] else "the running per-objective maxima at save time"
    augmented = f" − {scalarization['augmentation']}·Σ_i (z_i − R_i)" if scalarization["augmentation"] else ""
    return (
        f"Trained with the Tchebycheff scalarisation `−max_i w_i (z_i − R_i){augmented}`, ideal point z = ({z}) "
        f"({source}): a weighting asks for the point of the front where the weighted shortfalls from z are equal.\n"
    )


def steering_card_section(config: ConditioningConfig, model_id: str, front: Front | None = None) -> str:
    """Markdown: the objectives, the conditioning, a runnable steering snippet and, if given, the evaluated front.

    Args:
        config: the adapter's conditioning metadata.
        model_id: the hub id or path the reader loads the model from.
        front: an evaluation of the model over a grid of weightings (`evaluate_front`, `FrontEvaluationCallback`).
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
    lines = [
        "## Steering this model",
        "",
        (
            f"This is a [Conditional Language Policy](https://huggingface.co/papers/2407.15762) trained with "
            f"trl-clp: one adapter steerable at inference time across {len(names)} objectives, "
            f"**{', '.join(names)}**, by a weighting on the simplex (non-negative, summing to 1), chosen per request. "
            f"Conditioning: `{config.variant}`"
        )
        + (f", {len(config.conditioned_modules)} conditioned LoRA layers." if config.conditioned_modules else "."),
        scalarization_note(config),
        kl_note,
        "```python",
        "import torch",
        "from trl_clp import SteerableModel",
        "",
        f'steer = SteerableModel.from_pretrained("{model_id}")',
        'batch = steer.tokenizer(["Your prompt"] * 2, return_tensors="pt", padding=True, padding_side="left")',
        f"weights = torch.tensor([{[1.0] + [0.0] * (len(names) - 1)}, {example}])  # one weighting per row: {names}",
        "out = steer.generate(**batch, weights=weights, max_new_tokens=64, do_sample=True)",
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
