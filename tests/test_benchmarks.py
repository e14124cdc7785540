"""The benchmarks keep running: each script on its smallest setting, and the ratio records it writes."""

import json
import math
import statistics
from pathlib import Path

import pytest
import torch

from trl_clp import demo

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


def test_generation_benchmark_runs_an_adapter_with_features_against_a_lora_of_its_rank(benchmarks, tmp_path, capsys):
    import generation

    args = generation.BenchmarkArguments(
        quick=True,
        variants=["full"],
        num_objectives=[3],
        conditioning_features=["pairwise", "linear"],
        baselines=["plain_lora_same_rank"],
        num_prompts=4,
        new_tokens=3,
        repeats=1,
        output_json=str(tmp_path / "generation.json"),
    )
    generation.main(args)
    report = json.loads((tmp_path / "generation.json").read_text())
    (figure,) = report["figures"]
    check_figure(figure)
    assert figure["name"] == "generation/full/m3/linear+pairwise/vs_plain_lora_same_rank"
    assert report["settings"]["blocks_per_conditioned_layer"] == {"m3": 6}  # 3 linear + 3 pairs
    assert "6 blocks per conditioned layer, one LoRA of rank 48 per row" in capsys.readouterr().out


def test_dpo_step_benchmark_reports_paired_ratios_against_trl_dpo(benchmarks, tmp_path, capsys):
    import dpo_step

    args = dpo_step.BenchmarkArguments(
        quick=True,
        num_objectives=[2],
        batch_size=4,
        completion_length=4,
        repeats=2,
        warmup_steps=0,
        timed_steps=1,
        memory=False,
        output_json=str(tmp_path / "dpo_step.json"),
    )
    dpo_step.main(args)

    report = json.loads((tmp_path / "dpo_step.json").read_text())
    assert [figure["name"] for figure in report["figures"]] == ["step_time/dpo-full/m2", "step_time/dpo-attn/m2"]
    full, attn = report["figures"]
    for figure in (full, attn):
        check_figure(figure)
        assert figure["target"] == ["<=", 1.1]
        assert figure["baseline"]["label"] == "dpo+lora m=2 B=4" and len(figure["ratios"]) == 2
    # One measurement of TRL's DPO serves both variants: each ratio is against the same baseline numbers.
    assert full["baseline"]["samples"] == attn["baseline"]["samples"]
    assert full["candidate"]["label"] == "dpo-full-clp m=2 B=4"
    assert "adapter disabled" in report["settings"]["reference_log_probs"]
    out = capsys.readouterr().out
    for figure in (full, attn):
        verdict = "met" if figure["met"] else "MISSED"
        assert f"RATIO {figure['name']} {figure['ratio']:.3f} | target <= 1.10: {verdict}" in out


def test_dpo_step_trains_trl_dpo_and_dpo_clp_on_the_same_pairs_and_lora(benchmarks, tmp_path):
    import dpo_step
    from peft import PeftModel
    from trl import DPOTrainer

    from trl_clp import MultiObjectiveDPOTrainer

    args = dpo_step.BenchmarkArguments(quick=True, completion_length=5)
    trainers = {
        variant: dpo_step.build_dpo_trainer(dpo_step.TrainingRun(variant, 3, 4), args, 1, str(tmp_path / variant))
        for variant in ("dpo-baseline", "dpo-full", "dpo-attn")
    }
    baseline = trainers["dpo-baseline"]
    assert type(baseline) is DPOTrainer and isinstance(baseline.model, PeftModel)
    assert all(type(trainers[v]) is MultiObjectiveDPOTrainer for v in ("dpo-full", "dpo-attn"))
    # Same pairs, tokens and order for all three: TRL's DPO drops the labels, DPO-CLP keeps them.
    pairs = dpo_step.preference_pairs(4, 3, 5, dpo_step.base_tokenizer())
    for trainer in trainers.values():
        for column in ("prompt_ids", "chosen_ids", "rejected_ids"):
            assert trainer.train_dataset[column] == baseline.train_dataset[column]
    # The byte tokenizer: each response is exactly `completion_length` tokens, then the EOS TRL appends.
    eos = baseline.processing_class.eos_token_id
    assert all(len(ids) == 6 and ids[-1] == eos for ids in baseline.train_dataset["chosen_ids"])
    assert all(set(labels) <= {-1, 1} and len(labels) == 3 for labels in pairs["objective_labels"])
    # The baseline's LoRA has rank r on every target; full-CLP one rank-r block per objective on each, attn-CLP on
    # the attention projections only.
    r = dpo_step.LORA["r"]

    def ranks(trainer, projections=demo.LLAMA_LINEAR_MODULES) -> set[int]:
        return {
            module.lora_A["default"].out_features
            for name, module in trainer.model.named_modules()
            if name.rsplit(".", 1)[-1] in projections and hasattr(module, "lora_A")
        }

    assert ranks(baseline) == {r}
    assert ranks(trainers["dpo-full"]) == {3 * r}
    assert ranks(trainers["dpo-attn"], ("q_proj", "k_proj", "v_proj", "o_proj")) == {3 * r}
    assert ranks(trainers["dpo-attn"], ("gate_proj", "up_proj", "down_proj")) == {r}


def test_benchmarks_refuse_bad_model_sources_naming_the_fix(benchmarks, tmp_path):
    import dpo_step
    import generation
    import train_step

    for arguments in (train_step.BenchmarkArguments, dpo_step.BenchmarkArguments, generation.BenchmarkArguments):
        with pytest.raises(ValueError, match="no config.json.*save_pretrained"):
            arguments(model_path=str(tmp_path))
    demo_model_folder = tmp_path / "model"
    demo.make_tiny_llama(seed=0).save_pretrained(demo_model_folder)
    with pytest.raises(ValueError, match="remove --quick, --shape and --num_layers"):
        train_step.BenchmarkArguments(model_path=str(demo_model_folder), quick=True)
    with pytest.raises(ValueError, match="choose among.*no logit-CLP"):
        dpo_step.BenchmarkArguments(variants=["logit"])


@pytest.fixture
def model_folder(tmp_path):
    """A tiny Llama of a shape no benchmark builds, with its tokenizer, saved as a transformers folder."""
    path = tmp_path / "folder_model"
    model = demo.make_tiny_llama(seed=3, hidden_size=48, num_layers=3, num_heads=4, intermediate_size=80)
    model.save_pretrained(path)
    demo.make_byte_tokenizer().save_pretrained(path)
    return str(path), sum(p.numel() for p in model.parameters())


def test_model_path_trains_and_probes_the_given_folder(benchmarks, model_folder, tmp_path, capsys):
    import dpo_step
    import train_step
    from peak_memory import command_line
    from trl import TrlParser

    path, parameters = model_folder
    with torch.device("meta"):
        built = sum(p.numel() for p in demo.make_tiny_llama(seed=0).parameters())
    assert parameters != built  # the folder's count cannot come from the model a benchmark builds

    args = train_step.BenchmarkArguments(
        model_path=path,
        num_objectives=[2],
        variants=["attn"],
        batch_size=4,
        num_generations=2,
        completion_length=3,
        repeats=1,
        warmup_steps=0,
        timed_steps=1,
        memory=False,
        memory_steps=1,
        output_json=str(tmp_path / "train_step.json"),
    )
    train_step.main(args)
    report = json.loads((tmp_path / "train_step.json").read_text())
    assert report["settings"]["model_parameters"] == parameters
    assert f"MODEL {path}: {parameters / 1e6:.1f}M parameters (hidden 48, 3 layers" in capsys.readouterr().out
    check_figure(report["figures"][0])

    # A memory probe builds its trainer from the folder: it reports the parameters it trained under the LoRA.
    probe = train_step.memory_probe(train_step.TrainingRun("attn", 2, 4), args)
    assert probe["model_parameters"] == parameters and probe["peak_bytes"] > 4 * parameters
    dpo_args = dpo_step.BenchmarkArguments(model_path=path, batch_size=2, completion_length=3, memory_steps=1)
    probe = dpo_step.memory_probe(dpo_step.TrainingRun("dpo-full", 2, 2), dpo_args)
    assert probe["model_parameters"] == parameters and probe["peak_bytes"] > 4 * parameters
    # Probes run in subprocesses given the arguments as flags: they parse back to the same arguments, folder included.
    for benchmark_args in (args, dpo_args):
        (parsed,) = TrlParser(type(benchmark_args)).parse_args_and_config(args=command_line(benchmark_args))
        assert parsed == benchmark_args and parsed.model_path == path


def test_generation_benchmark_loads_the_given_folder(benchmarks, model_folder, tmp_path):
    import generation

    path, parameters = model_folder
    args = generation.BenchmarkArguments(
        model_path=path,
        baselines=["plain_lora"],
        variants=["attn"],
        num_objectives=[2],
        num_prompts=3,
        new_tokens=2,
        repeats=1,
        output_json=str(tmp_path / "generation.json"),
    )
    generation.main(args)
    report = json.loads((tmp_path / "generation.json").read_text())
    assert report["settings"]["model_parameters"] == parameters
    assert [figure["name"] for figure in report["figures"]] == ["generation/attn/m2/vs_plain_lora"]
    check_figure(report["figures"][0])


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


def test_block_signal_benchmark_measures_agreement_and_compares_margins(benchmarks, tmp_path, capsys):
    import block_signal

    args = block_signal.BlockSignalArguments(
        train_steps=[0],
        num_batches=1,
        pretrain_steps=5,
        compare_steps=1,
        compare_methods=["mixed", "own:0:1"],
        num_eval_prompts=2,
        eval_samples_per_prompt=1,
        output_json=str(tmp_path / "block_signal.json"),
    )
    block_signal.main(args)

    report = json.loads((tmp_path / "block_signal.json").read_text())
    settings = [m["setting"] for m in report["measurements"]]
    assert settings == ["dirichlet/mixed", "dirichlet/own", "one_hot/mixed"]
    for measurement in report["measurements"]:
        (batch,) = measurement["batches"]
        assert len(batch["agreement"]) == 2  # one per block
        # agreement ≤ 1 by the triangle inequality; the summed gradient is at most the rows' summed norms
        assert all(0 <= a <= 1 + 1e-6 for a in batch["agreement"])
    assert set(report["comparison"]) == {"mixed", "own:0:1"}
    assert len(report["comparison"]["own:0:1"]["paired_vs_mixed"]) == 2
    assert "paired vs mixed" in capsys.readouterr().out
