"""examples/compare_dpo.py in its --quick mode: the report's numbers recomputed from the pairs and completions it
wrote, with the true reward functions."""

import importlib.util
import json
import os
import sys

import pytest
import torch

from trl_clp.pareto import fraction_dominated, hypervolume
from trl_clp.rewards import lowercase_reward, uppercase_reward

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def test_dpo_comparison_report_matches_its_samples(tmp_path):
    spec = importlib.util.spec_from_file_location("compare_dpo", os.path.join(EXAMPLES, "compare_dpo.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_dpo"] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    first = [m for m in module.METHODS if m != "dpo-clp-full-scores"]
    module.main(module.CompareDPOArguments(output_dir=str(tmp_path), methods=first, quick=True))
    pairs_written = (tmp_path / "pairs" / "seed0.jsonl").read_text()
    before = {m: (tmp_path / "fronts" / f"{m}-s0.samples.jsonl").read_text() for m in first}
    # --reuse adds a method: on the same base model and pairs, the other methods read back, not retrained.
    results = module.main(
        module.CompareDPOArguments(output_dir=str(tmp_path), methods=module.METHODS, reuse=True, quick=True)
    )
    assert (tmp_path / "pairs" / "seed0.jsonl").read_text() == pairs_written
    assert before == {m: (tmp_path / "fronts" / f"{m}-s0.samples.jsonl").read_text() for m in first}
    assert list(results["methods"]) == module.METHODS and results["args"]["seeds"] == [0]
    rewards = (lowercase_reward, uppercase_reward)

    # The pairs: the reference policy's completions, labelled by the sign of each true reward's difference.
    pairs = [json.loads(line) for line in (tmp_path / "pairs" / "seed0.jsonl").read_text().splitlines()]
    assert len(pairs) > 8
    for pair in pairs:
        labels = [_sign(f([pair["chosen"]])[0] - f([pair["rejected"]])[0]) for f in rewards]
        assert pair["objective_labels"] == labels and any(labels)

    # Each method's front: its completions re-scored here, averaged per prompt, then over prompts.
    weightings = results["weightings"]
    assert weightings == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    means = {}
    for method, entry in results["methods"].items():
        samples = [
            json.loads(line) for line in (tmp_path / "fronts" / f"{method}-s0.samples.jsonl").read_text().splitlines()
        ]
        per_prompt = {}
        for sample in samples:
            scores = [f([sample["completion"]])[0] for f in rewards]
            per_prompt.setdefault((tuple(sample["weights"]), sample["prompt"]), []).append(scores)
        rows = []
        for weights in weightings:
            groups = [
                torch.tensor(v, dtype=torch.float64).mean(0) for (w, _), v in per_prompt.items() if list(w) == weights
            ]
            assert len(groups) == results["args"]["num_eval_prompts"]
            rows.append(torch.stack(groups).mean(0))
        means[method] = torch.stack(rows)  # (K, 2)
        assert torch.tensor(entry["rewards"], dtype=torch.float64).allclose(means[method], atol=1e-9)
        volume = hypervolume(means[method], torch.zeros(2, dtype=torch.float64))
        assert entry["hypervolume"][0] == pytest.approx(volume) and entry["hypervolume_per_seed"] == [
            pytest.approx(volume)
        ]
        assert entry["hypervolume"][1] <= volume + 1e-9 <= entry["hypervolume"][2] + 2e-9
        for i, name in enumerate(("lowercase_reward", "uppercase_reward")):  # R_i at w_i = 1 minus at w_i = 0
            at_one, at_zero = (0, 2) if i == 0 else (2, 0)
            expected = (means[method][at_one, i] - means[method][at_zero, i]).item()
            assert entry["margins"][name][0] == pytest.approx(expected)
    for method, entry in results["methods"].items():
        for other, share in entry["dominates_fraction_of"].items():
            assert share == pytest.approx(fraction_dominated(means[method], means[other]))
    paired = results["paired"]["dpo-clp-full − online-clp-full"]["hypervolume"]
    assert paired["difference"][0] == pytest.approx(
        hypervolume(means["dpo-clp-full"], torch.zeros(2)) - hypervolume(means["online-clp-full"], torch.zeros(2)),
        abs=1e-6,
    )
    low, high = paired["difference"][1:]
    expected = "A beats B" if low > 0 else "B beats A" if high < 0 else "no difference detected"
    assert paired["verdict"] == expected

    # The reference policy: the base with its adapter off, scored on the same prompts.
    reference = [
        json.loads(line) for line in (tmp_path / "fronts" / "reference-s0.samples.jsonl").read_text().splitlines()
    ]
    for f in rewards:
        expected = sum(f([s["completion"]])[0] for s in reference) / len(reference)
        assert results["base_model"][f.__name__]["mean"] == pytest.approx(expected)

    report = (tmp_path / "report.md").read_text()
    for method, entry in results["methods"].items():
        point, low, high = entry["hypervolume"]
        assert f"| {method} | 1 | {point:.3f} [{low:.3f}, {high:.3f}] |" in report
    assert (tmp_path / "fronts.png").stat().st_size > 1000
    assert "### dpo-clp-full − online-clp-full" in report
