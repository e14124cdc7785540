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


def plot_mean_fronts(results: dict, path: str) -> str:
    """A comparison's seed-averaged fronts (first two objectives), from `trl_clp.comparison.compare_fronts`' results:
    one line per method with its KL range in the legend, its guarded front dashed in the same colour when there is
    one, and the base model as a star. The ends and the middle of the grid are labelled with the first weight."""
    plt = _pyplot()
    names, weightings = results["objective_names"], results["weightings"]
    figure, axis = plt.subplots(figsize=(6.5, 5))
    for index, (label, method) in enumerate(results["methods"].items()):
        color = f"C{index % 10}"
        x, y = [point[0] for point in method["rewards"]], [point[1] for point in method["rewards"]]
        axis.plot(x, y, marker="o", color=color, label=f"{label} (KL {min(method['kl']):.1f}–{max(method['kl']):.1f})")
        for w, xi, yi in zip(weightings, x, y, strict=True):
            if w[0] in (0.0, 0.5, 1.0):
                axis.annotate(f"{w[0]:g}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=7)
        if "guarded" in method:
            guarded = method["guarded"]["rewards"]
            axis.plot([p[0] for p in guarded], [p[1] for p in guarded], linestyle="--", color=color, alpha=0.6)
    if "base_model" in results:
        base = results["base_model"]
        axis.plot(
            [base[names[0]]["mean"]],
            [base[names[1]]["mean"]],
            marker="*",
            markersize=12,
            color="black",
            linestyle="",
            label="base model",
        )
    axis.set_xlabel(f"{names[0]} (mean over held-out prompts)")
    axis.set_ylabel(f"{names[1]} (mean over held-out prompts)")
    # Long objective names stay on the axes: a title that repeats them runs past the figure's edge.
    axis.set_title("Seed-averaged fronts; point labels: the first weight w₁", fontsize=10)
    if any("guarded" in method for method in results["methods"].values()):
        axis.plot([], [], linestyle="--", color="gray", label="guarded front (flagged completions score 0)")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_equal_kl(results: dict, path: str) -> str:
    """One panel per weighting: each front's scalarised gain over the base model (with its interval) against its KL,
    from `compare_fronts`' `equal_kl` view; the fronts of a KL series share a colour and a line."""
    plt = _pyplot()
    view, weightings = results["equal_kl"], results["weightings"]
    figure, axes = plt.subplots(1, len(weightings), figsize=(3.2 * len(weightings), 3.6), sharey=True, squeeze=False)
    groups = list(view["series"].values()) + [  # a KL series, or one front alone
        [label] for label in view["per_front"] if not any(label in m for m in view["series"].values())
    ]
    markers = "osD^v<>pPX*h"
    for g, members in enumerate(groups):
        color = f"C{g % 10}"
        for k, axis in enumerate(axes[0]):
            points = sorted(  # (KL, gain, label), along the KL
                (view["per_front"][label]["kl"][k], view["per_front"][label]["gain"][k], label) for label in members
            )
            if len(points) > 1:
                axis.plot([x for x, _, _ in points], [gain[0] for _, gain, _ in points], color=color, linewidth=1)
            for i, (x, (point, low, high), label) in enumerate(points):
                axis.errorbar(
                    [x],
                    [point],
                    yerr=[[point - low], [high - point]],
                    color=color,
                    marker=markers[i % len(markers)],
                    capsize=2,
                    label=label if k == 0 else None,
                )
    for k, axis in enumerate(axes[0]):
        axis.axhline(0.0, color="black", linewidth=0.5)
        axis.set_title("w = (" + ", ".join(f"{x:g}" for x in weightings[k]) + ")", fontsize=9)
        axis.set_xlabel("KL to the base model (nats)")
    axes[0][0].set_ylabel("w·R̄ − w·R̄_base")
    axes[0][0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
