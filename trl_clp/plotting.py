"""PNG figures of Pareto fronts (matplotlib, installed with `pip install "trl-clp[plots]"`)."""

from __future__ import annotations

import itertools

from .evaluation import Front


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:
        raise ImportError('Plots need matplotlib: `pip install "trl-clp[plots]"`.') from error
    matplotlib.use("Agg")  # files only: no display is needed or assumed
    import matplotlib.pyplot as plt

    return plt


def _draw_front(axis, front: Front, i: int, j: int, label: str) -> None:
    rewards = front.rewards()  # (K, m)
    x, y = rewards[:, i].tolist(), rewards[:, j].tolist()
    x_err = [[r.rewards[front.objective_names[i]] - r.reward_ci[front.objective_names[i]][0] for r in front.results],
             [r.reward_ci[front.objective_names[i]][1] - r.rewards[front.objective_names[i]] for r in front.results]]
    y_err = [[r.rewards[front.objective_names[j]] - r.reward_ci[front.objective_names[j]][0] for r in front.results],
             [r.reward_ci[front.objective_names[j]][1] - r.rewards[front.objective_names[j]] for r in front.results]]
    axis.errorbar(x, y, xerr=x_err, yerr=y_err, marker="o", capsize=2, label=label)
    for result, xi, yi in zip(front.results, x, y, strict=True):
        axis.annotate(",".join(f"{w:.2g}" for w in result.weights), (xi, yi), fontsize=6, alpha=0.7)
    axis.set_xlabel(front.objective_names[i])
    axis.set_ylabel(front.objective_names[j])


def plot_fronts(fronts: dict[str, Front], path: str, title: str | None = None) -> str:
    """One panel per pair of objectives (one panel for m = 2); one line per method, with 95% CI bars.

    Args:
        fronts: method label → its evaluated front (all on the same objectives).
        path: the PNG file to write.
    """
    plt = _pyplot()
    first = next(iter(fronts.values()))
    pairs = list(itertools.combinations(range(len(first.objective_names)), 2))
    figure, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 4.5), squeeze=False)
    for axis, (i, j) in zip(axes[0], pairs, strict=True):
        for label, front in fronts.items():
            _draw_front(axis, front, i, j, label)
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_fronts_over_steps(fronts_by_step: dict[int, Front], path: str) -> str:
    """The front at each evaluated training step (first two objectives), to see it grow."""
    return plot_fronts({f"step {step}": front for step, front in sorted(fronts_by_step.items())}, path,
                       title="Front during training")


def plot_value_ratio(method: Front, baseline: Front, path: str, method_label: str = "CLP",
                     baseline_label: str = "RS") -> str:
    """The paper's bar chart: `1 − V_method / V_baseline` per weighting (V = w·R − α·KL; below 0 = method better
    when values are positive)."""
    plt = _pyplot()
    if [r.weights for r in method.results] != [r.weights for r in baseline.results]:
        raise ValueError("Both fronts must be evaluated on the same weightings, in the same order.")
    ratios = [1 - m.value / b.value if b.value else float("nan") for m, b in zip(method.results, baseline.results)]
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
        kl, reward = zip(*sorted(points))
        axis.plot(kl, reward, marker="o", label=label)
    axis.set_xlabel("KL to the reference (nats per completion)")
    axis.set_ylabel(reward_name)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
