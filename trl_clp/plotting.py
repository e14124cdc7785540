"""PNG figures of Pareto fronts (matplotlib, installed with `pip install "trl-clp[plots]"`)."""

from __future__ import annotations

import itertools

from .evaluation import Front
from .extras import require


def _pyplot():
    matplotlib = require("matplotlib", "plots", "plots")
    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    return plt


# Where each front's weighting labels sit, in points from the marker: fronts drawn together label on different sides.
LABEL_OFFSETS = [((7, 5), "left"), ((-7, -11), "right"), ((7, -11), "left"), ((-7, 5), "right")]


def _draw_front(axis, front: Front, i: int, j: int, label: str, index: int) -> None:
    names = front.objective_names
    x, y = front.rewards()[:, i].tolist(), front.rewards()[:, j].tolist()  # (K,) each
    x_err = [
        [r.rewards[names[i]] - r.reward_ci[names[i]][0] for r in front.results],
        [r.reward_ci[names[i]][1] - r.rewards[names[i]] for r in front.results],
    ]
    y_err = [
        [r.rewards[names[j]] - r.reward_ci[names[j]][0] for r in front.results],
        [r.reward_ci[names[j]][1] - r.rewards[names[j]] for r in front.results],
    ]
    line = axis.errorbar(x, y, xerr=x_err, yerr=y_err, marker="o", capsize=2, label=label)
    offset, alignment = LABEL_OFFSETS[index % len(LABEL_OFFSETS)]
    for result, xi, yi in zip(front.results, x, y, strict=True):
        axis.annotate(
            "(" + ", ".join(f"{w:.2g}" for w in result.weights) + ")",
            (xi, yi),
            xytext=offset,
            textcoords="offset points",
            ha=alignment,
            fontsize=8,
            color=line.lines[0].get_color(),
        )
    axis.set_xlabel(f"{names[i]} (mean reward)")
    axis.set_ylabel(f"{names[j]} (mean reward)")


def plot_fronts(fronts: dict[str, Front], path: str, title: str | None = None) -> str:
    """One panel per pair of objectives (one panel for m = 2); one line per method, with 95% CI bars.

    Each point is one weighting, labelled with it; a note under the plot says what the points, labels and bars are.

    Args:
        fronts: legend label → its evaluated front (all on the same objectives). Name the model in the label, e.g.
            "full-CLP, 300 steps", not only the variant.
        path: the PNG file to write.
        title: drawn above the panels.
    """
    plt = _pyplot()
    first = next(iter(fronts.values()))
    names = first.objective_names
    pairs = list(itertools.combinations(range(len(names)), 2))
    figure, axes = plt.subplots(1, len(pairs), figsize=(6 * len(pairs), 5.5), squeeze=False)
    for axis, (i, j) in zip(axes[0], pairs, strict=True):
        for index, (label, front) in enumerate(fronts.items()):
            _draw_front(axis, front, i, j, label, index)
        axis.grid(alpha=0.3)
        axis.margins(0.12)  # room for the labels at the extremes
    axes[0][0].legend(fontsize=9)
    if title:
        figure.suptitle(title)
    samples = first.results[0].num_completions if first.results else 0
    figure.text(
        0.01,
        0.01,
        f"Each point: one weighting w = ({', '.join(names)}), labelled; its mean rewards over {samples} completions. "
        "Bars: 95% bootstrap intervals over prompts.",
        fontsize=8,
        wrap=True,
    )
    figure.tight_layout(rect=(0, 0.05, 1, 1))
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_fronts_over_steps(fronts_by_step: dict[int, Front], path: str) -> str:
    """The front at each evaluated training step (first two objectives), to see it grow."""
    return plot_fronts(
        {f"step {step}": front for step, front in sorted(fronts_by_step.items())}, path, title="Front during training"
    )


def plot_value_ratio(
    method: Front, baseline: Front, path: str, method_label: str = "CLP", baseline_label: str = "RS"
) -> str:
    """The paper's bar chart: `1 − V_method / V_baseline` per weighting (V = w·R − α·KL; below 0 = method better
    when values are positive)."""
    plt = _pyplot()
    if [r.weights for r in method.results] != [r.weights for r in baseline.results]:
        raise ValueError("Both fronts must be evaluated on the same weightings, in the same order.")
    ratios = [
        1 - m.value / b.value if b.value else float("nan")
        for m, b in zip(method.results, baseline.results, strict=True)
    ]
    labels = ["(" + ",".join(f"{w:.2g}" for w in r.weights) + ")" for r in method.results]
    figure, axis = plt.subplots(figsize=(max(5, 0.5 * len(labels)), 4))
    axis.bar(range(len(ratios)), ratios)
    axis.axhline(0, color="black", linewidth=0.8)
    axis.set_xticks(range(len(labels)), labels, rotation=60, fontsize=7)
    axis.set_ylabel(f"1 − V_{method_label} / V_{baseline_label}")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_reward_kl(curves: dict[str, list[tuple[float, float]]], path: str, reward_name: str = "reward") -> str:
    """Reward against KL to the reference, one line per method (e.g. KL-conditioned CLP and DeRA over α)."""
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(5, 4))
    for label, points in curves.items():
        kl, reward = zip(*sorted(points), strict=True)
        axis.plot(kl, reward, marker="o", label=label)
    axis.set_xlabel("KL to the reference (nats per completion)")
    axis.set_ylabel(reward_name)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
