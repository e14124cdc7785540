"""benchmarks/dpo_tuning.py in its --quick mode: a configuration's numbers recomputed from what it wrote, and a grid
run one configuration at a time (a configuration already measured is read back, not trained again)."""

import json
import os

import pytest

BENCHMARKS = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")


def test_tuning_measures_one_configuration_at_a_time(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import dpo_tuning

    args = dpo_tuning.DPOTuningArguments(betas=[1.0], learning_rates=[1e-3], output_dir=str(tmp_path), quick=True)
    report = dpo_tuning.main(args)
    (entry,) = report["configurations"]
    assert (entry["method"], entry["beta"], entry["learning_rate"]) == ("dpo-clp-full", 1.0, 1e-3)
    assert json.loads((tmp_path / "tuning.json").read_text()) == report
    # 3 weightings, (1, 0) first: each margin is that objective's reward at weight 1 minus at weight 0.
    rewards = entry["rewards"]
    assert len(entry["kl"]) == len(rewards) == 3
    assert entry["margins"]["lowercase_reward"] == pytest.approx(rewards[0][0] - rewards[2][0])
    assert entry["margins"]["uppercase_reward"] == pytest.approx(rewards[2][1] - rewards[0][1])
    held_out = entry["held_out"]
    assert held_out["num_pairs"] == report["held_out_pairs"] > 0
    for accuracies in held_out["objective_accuracy"].values():
        assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert set(entry["train"]) == {"rewards/margins", "rewards/accuracies"}
    assert (tmp_path / "pairs" / "held_out.jsonl").is_file() and report["training_pairs"] > 8

    # Run again with the configuration done: read back, nothing trained, the same table printed.
    def no_training(*args, **kwargs):
        raise AssertionError("a configuration already in tuning.json was trained again")

    monkeypatch.setattr(dpo_tuning, "run_configuration", no_training)
    capsys.readouterr()
    assert dpo_tuning.main(args) == report
    table = capsys.readouterr().out
    assert "| dpo-clp-full | 1 | 0.001 |" in table and table.count("| dpo-clp-full |") == 1
