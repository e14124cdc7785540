"""The benchmarks keep running: each script on its smallest setting, and the ratio records it writes."""

import json
import math
import statistics
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def check_figure(figure: dict) -> None:
    """A figure's record is consistent with its own samples: every sample a positive finite measurement, the ratios
    paired per repeat, the ratio their median, the verdict the target's comparison."""
    for side in ("baseline", "candidate"):
        samples = figure[side]["samples"]
        assert samples and all(math.isfinite(v) and v > 0 for v in samples), figure
        assert figure[side]["median"] == pytest.approx(statistics.median(samples))
    baseline, candidate = figure["baseline"]["samples"], figure["candidate"]["samples"]
    assert figure["ratios"] == pytest.approx([c / b for b, c in zip(baseline, candidate, strict=True)])
    assert figure["ratio"] == pytest.approx(statistics.median(figure["ratios"])) and figure["ratio"] > 0
    if figure["target"] is None:
        assert figure["met"] is None
    else:
        op, bound = figure["target"]
        assert figure["met"] == (figure["ratio"] <= bound if op == "<=" else figure["ratio"] >= bound)


@pytest.fixture
def benchmarks(monkeypatch):
    """The scripts import their sibling modules (`workload`, `reporting`) the way `python benchmarks/x.py` does."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))


def test_train_step_benchmark_reports_paired_ratios(benchmarks, tmp_path, capsys):
    import train_step

    args = train_step.BenchmarkArguments(
        quick=True,
        num_objectives=[2],
        variants=["attn"],
        batch_size=8,
        completion_length=4,
        repeats=2,
        warmup_steps=0,
        timed_steps=1,
        memory=False,
        output_json=str(tmp_path / "train_step.json"),
    )
    train_step.main(args)

    report = json.loads((tmp_path / "train_step.json").read_text())
    assert [figure["name"] for figure in report["figures"]] == ["step_time/attn/m2"]
    figure = report["figures"][0]
    ratios = [c / b for b, c in zip(figure["baseline"]["samples"], figure["candidate"]["samples"], strict=True)]
    assert len(ratios) == 2
    assert figure["ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two paired ratios
    assert figure["target"] == ["<=", 1.1]
    check_figure(figure)
    # The printed line quotes the recorded ratio and verdict.
    assert (
        f"RATIO step_time/attn/m2 {figure['ratio']:.3f} | target <= 1.10: {'met' if figure['met'] else 'MISSED'}"
        in (capsys.readouterr().out)
    )


def test_scaling_benchmark_fits_slopes(benchmarks, tmp_path):
    import scaling

    args = scaling.BenchmarkArguments(
        quick=True,
        scaling_num_objectives=[2, 3],
        scaling_batch_sizes=[4, 8],
        batch_scaling_num_objectives=2,
        batch_size=4,
        completion_length=4,
        repeats=1,
        warmup_steps=0,
        timed_steps=1,
        output_json=str(tmp_path / "scaling.json"),
    )
    scaling.main(args)

    report = json.loads((tmp_path / "scaling.json").read_text())
    assert [figure["name"] for figure in report["figures"]] == [
        "step_time/scaling_m/full/m2",
        "step_time/scaling_m/full/m3",
        "step_time/scaling_batch/full/m2/b4",
        "step_time/scaling_batch/full/m2/b8",
    ]
    for figure in report["figures"]:
        check_figure(figure)
    medians = {f["name"]: (f["baseline"]["median"], f["candidate"]["median"]) for f in report["figures"]}
    m_slope, batch_slope = report["slopes"]
    # The slopes are fitted to the figures' medians: two points each, so the slope is the difference over the step.
    assert m_slope["clp_seconds"] == [medians[f"step_time/scaling_m/full/m{m}"][1] for m in (2, 3)]
    assert m_slope["baseline_seconds"] == [medians[f"step_time/scaling_m/full/m{m}"][0] for m in (2, 3)]
    assert batch_slope["clp_seconds"] == [medians[f"step_time/scaling_batch/full/m2/b{b}"][1] for b in (4, 8)]
    for slope, step in ((m_slope, 1), (batch_slope, 4)):
        clp, baseline = slope["clp_seconds"], slope["baseline_seconds"]
        assert slope["clp_slope_seconds"] == pytest.approx((clp[1] - clp[0]) / step)
        assert slope["baseline_slope_seconds"] == pytest.approx((baseline[1] - baseline[0]) / step)
        assert slope["clp_slope_relative_to_first_baseline_step"] == pytest.approx(
            slope["clp_slope_seconds"] / baseline[0]
        )


def test_memory_probe_counts_the_run(benchmarks, tmp_path):
    import train_step

    args = train_step.BenchmarkArguments(quick=True, completion_length=4, memory_steps=1)
    probe = train_step.memory_probe(train_step.TrainingRun("logit", 2, 8), args)
    # A tiny model's training peak: above its own weights (0.2M float32 parameters, ~0.8 MB), far below a GiB.
    assert 800_000 < probe["peak_bytes"] < 2**30, probe


def test_generation_benchmark_reports_every_baseline(benchmarks, tmp_path, capsys):
    import generation

    args = generation.BenchmarkArguments(
        quick=True,
        variants=["full"],
        num_objectives=[2],
        num_prompts=4,
        new_tokens=3,
        repeats=1,
        output_json=str(tmp_path / "generation.json"),
    )
    generation.main(args)

    report = json.loads((tmp_path / "generation.json").read_text())
    names = [figure["name"].rsplit("/", 1)[-1] for figure in report["figures"]]
    assert names == ["vs_plain_lora", "vs_rewarded_soups", "vs_dera", "vs_dera_same_loop"]
    for figure in report["figures"]:
        check_figure(figure)
    plain, soups, dera, dera_same_loop = report["figures"]
    # One measurement of CLP's throughput serves as the candidate of the first three figures, and DeRA's as the
    # baseline of both DeRA figures: the ratios are against the same numbers.
    assert plain["candidate"]["samples"] == soups["candidate"]["samples"] == dera["candidate"]["samples"]
    assert dera["baseline"]["samples"] == dera_same_loop["baseline"]["samples"]
    assert dera_same_loop["candidate"]["samples"] != dera["candidate"]["samples"]
    assert f"RATIO generation/full/m2/vs_rewarded_soups {soups['ratio']:.3f} " in capsys.readouterr().out


def test_gpu_check_runs_on_cpu(benchmarks, tmp_path, capsys):
    """The GPU check's whole code path at tiny sizes: training ratios, QLoRA, generation, bf16 identities."""
    import gpu_check

    args = gpu_check.GpuCheckArguments(
        cpu=True, num_objectives=[2], variants=["logit"], output_json=str(tmp_path / "gpu_check.json")
    )
    gpu_check.main(args)

    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["machine"]["torch"] and report["settings"]["device"] == "cpu"
    names = [figure["name"] for figure in report["figures"]]
    assert names == ["step_time/logit/m2", "peak_memory/logit/m2", "generation/logit/m2/vs_plain_lora"]
    assert all(figure["ratio"] > 0 for figure in report["figures"])
    assert all(run["lora_moved"] for run in report["training_runs"])
    qlora = report["qlora"]
    assert "skipped" in qlora or qlora["passed"]
    for variant, identity in report["identities"].items():
        assert identity["passed"], (variant, identity)
        assert "mixed_vs_merged" in identity
    assert report["identities"]["logit"]["tiled_head_logps_vs_fp32"] <= 1e-4  # fp32 on CPU: exact
    assert "IDENTITIES passed: True" in capsys.readouterr().out
