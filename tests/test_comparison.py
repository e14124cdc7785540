"""trl_clp.comparison and `trl-clp compare`: per-method statistics and paired differences recomputed from the
completions, verdicts where the answer is known, gaming guards and guarded fronts, and --reuse without the runs."""

import json
import math
import re
import shutil

import pytest
import torch
from peft import LoraConfig

from trl_clp import SteerableModel, demo, gaming_guards
from trl_clp.cli import main as cli
from trl_clp.comparison import (
    ComparedFront,
    compare_fronts,
    format_report,
    gain_at_kl,
    gain_per_nat,
    matched_gain_difference,
    plan_fronts,
    plan_kl_series,
)
from trl_clp.evaluation import Front, WeightingResult
from trl_clp.pareto import hypervolume

WEIGHTINGS = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
NAMES = ["positivity", "objectivity"]


# ------------------------------------------------------------------------------------------ synthetic evaluations


def synthetic_front(reward, completion=lambda k, p: "a calm and plain answer here", num_prompts=6, kl=1.0) -> Front:
    """A front whose sample at weighting k and prompt p has rewards `reward(k, p)` (one sample per pair)."""
    samples = []
    for k, weights in enumerate(WEIGHTINGS):
        for p in range(num_prompts):
            values = reward(k, p)
            samples.append(
                {
                    "prompt": f"prompt {p}",
                    "weights": weights,
                    "sample": 0,
                    "completion": completion(k, p),
                    "rewards": dict(zip(NAMES, values, strict=True)),
                    "kl": kl + 0.1 * k,
                    "value": None,
                }
            )
    results = []
    for weights in WEIGHTINGS:
        at_k = [s for s in samples if s["weights"] == weights]
        means = {n: sum(s["rewards"][n] for s in at_k) / len(at_k) for n in NAMES}
        results.append(WeightingResult(weights, means, sum(s["kl"] for s in at_k) / len(at_k), 0.0, len(at_k)))
    return Front(NAMES, 0.2, results, samples)


def steering(seed_offset: float, shift: float = 0.0):
    """Rewards that follow the weighting (R_i rises with w_i), a per-seed offset, prompt noise, plus `shift`."""
    generator = torch.Generator().manual_seed(int(seed_offset * 1000) + 7)
    noise = torch.rand(3, 6, 2, generator=generator).tolist()

    def reward(k, p):
        w = WEIGHTINGS[k]
        return [0.3 + 0.3 * w[i] + seed_offset + 0.2 * noise[k][p][i] + shift for i in range(2)]

    return reward


def recomputed_means(fronts: list[Front]) -> torch.Tensor:
    """`(K, m)`: per seed, per weighting, the mean over prompts (one sample each), then the mean over seeds."""
    per_seed = []
    for front in fronts:
        rows = []
        for w in WEIGHTINGS:
            at_w = [s for s in front.samples if s["weights"] == w]
            rows.append([sum(s["rewards"][n] for s in at_w) / len(at_w) for n in NAMES])
        per_seed.append(rows)
    return torch.tensor(per_seed, dtype=torch.float64).mean(0)


def test_compare_fronts_recomputes_every_statistic_and_decides_a_known_difference():
    """ "soups" = "clp" + 0.05 on every reward of every prompt and seed: its w·R is higher by exactly 0.05 at every
    weighting ("soups beats clp", a degenerate interval), its margins equal clp's (no difference detected), its
    hypervolume higher on every resample; the per-method intervals overlap all the same."""
    offsets = [0.0, 0.08, -0.06]
    fronts = {
        "clp": [synthetic_front(steering(o)) for o in offsets],
        "soups": [synthetic_front(steering(o, shift=0.05)) for o in offsets],
        "prompting": [synthetic_front(lambda k, p: [0.5, 0.5]) for _ in range(2)],
    }
    base = synthetic_front(lambda k, p: [0.45, 0.4], kl=0.0)
    base.results, base.samples = base.results[:1], [s for s in base.samples if s["weights"] == WEIGHTINGS[0]]
    results = compare_fronts(fronts, base, num_resamples=300, seed=0)
    weights = torch.tensor(WEIGHTINGS, dtype=torch.float64)
    for label, runs in fronts.items():
        method, means = results["methods"][label], recomputed_means(runs)
        assert torch.tensor(method["rewards"], dtype=torch.float64).allclose(means, atol=1e-12)
        point, low, high = method["hypervolume"]
        assert point == pytest.approx(hypervolume(means, torch.zeros(2))) and low <= point <= high
        assert method["margins"]["positivity"][0] == pytest.approx((means[0, 0] - means[2, 0]).item())
        assert method["margins"]["objectivity"][0] == pytest.approx((means[2, 1] - means[0, 1]).item())
        assert [e[0] for e in method["scalarised"]] == pytest.approx((weights * means).sum(1).tolist())
        assert method["hypervolume_per_seed"] == pytest.approx([f.hypervolume([0, 0]) for f in runs])
    low_clp, high_clp = results["methods"]["clp"]["hypervolume"][1:]
    low_soups, high_soups = results["methods"]["soups"]["hypervolume"][1:]
    assert low_soups < high_clp and low_clp < high_soups  # overlapping per-method intervals

    pair = results["paired"]["clp − soups"]
    assert (pair["a"], pair["b"]) == ("clp", "soups")
    for entry in pair["scalarised"]:
        assert entry["difference"] == pytest.approx([-0.05] * 3) and entry["verdict"] == "B beats A"
    for entry in pair["margins"].values():
        assert entry["difference"] == pytest.approx([0.0] * 3, abs=1e-12)
        assert entry["verdict"] == "no difference detected"
    assert pair["hypervolume"]["verdict"] == "B beats A" and pair["hypervolume"]["difference"][2] < 0
    assert pair["kl_mean"] == pytest.approx([0.0] * 3) and "verdict" not in pair["kl"][0]
    assert set(results["paired"]) == {"clp − soups", "clp − prompting", "soups − prompting"}
    # The prompting method does not steer: clp's margins exceed its by far.
    assert results["paired"]["clp − prompting"]["margins"]["positivity"]["verdict"] == "A beats B"

    report = format_report(results)
    assert "### clp − soups" in report
    assert "Decided: hypervolume: soups beats clp; w·R at (1, 0): soups beats clp" in report
    assert re.search(
        r"\| positivity margin \| \+0\.000 \[-?\+?0\.000, \+0\.000\] \| no difference detected \|", report
    )

    # The equal-KL view: the gain over the base model recomputed from the means.
    gains = results["equal_kl"]["per_front"]["clp"]["gain"]
    base_means = torch.tensor([0.45, 0.4], dtype=torch.float64)
    expected = (weights * (recomputed_means(fronts["clp"]) - base_means)).sum(1)
    assert [g[0] for g in gains] == pytest.approx(expected.tolist())


def test_gaming_guards_flag_a_method_and_its_guarded_front_scores_flagged_completions_zero():
    """A method whose completions at w = (0, 1) are empty (objectivity 1.0: gaming): the near-empty guard flags it
    against the base model there, and its guarded front scores those completions 0, lowering its hypervolume."""

    def gamed(k, p):
        return "" if k == 2 else "a calm and plain answer here"

    fronts = {
        "gamed": [synthetic_front(lambda k, p: [0.6, 1.0 if k == 2 else 0.4], completion=gamed) for _ in range(2)],
        "honest": [synthetic_front(steering(0.0)) for _ in range(2)],
    }
    base = synthetic_front(lambda k, p: [0.45, 0.4], kl=0.0)
    base.results, base.samples = base.results[:1], [s for s in base.samples if s["weights"] == WEIGHTINGS[0]]
    results = compare_fronts(fronts, base, num_resamples=100)
    for label, runs in fronts.items():
        samples = [s for front in runs for s in front.samples]
        for k, entry in enumerate(results["methods"][label]["gaming_guards"]):
            at_w = [s for s in samples if s["weights"] == WEIGHTINGS[k]]
            expected = gaming_guards.compare_guard_rates(at_w, base.samples, significance=0.05)
            assert entry["weights"] == WEIGHTINGS[k]
            assert {g: r["flagged"] for g, r in entry["guards"].items()} == {g: r.flagged for g, r in expected.items()}
        guarded = [
            Front(f.objective_names, f.kl_weight, f.results, gaming_guards.guarded_samples(f.samples)) for f in runs
        ]
        assert torch.tensor(results["methods"][label]["guarded"]["rewards"], dtype=torch.float64).allclose(
            recomputed_means(guarded)
        )
    flagged = results["methods"]["gamed"]["gaming_guards"][2]["guards"]["any"]
    assert flagged["rate"] == 1.0 and flagged["worse"] and flagged["p_value"] < 0.05
    assert not results["methods"]["gamed"]["gaming_guards"][0]["guards"]["any"]["worse"]
    guarded = results["methods"]["gamed"]["guarded"]
    assert guarded["rewards"][2] == [0.0, 0.0]
    assert guarded["hypervolume"][0] < results["methods"]["gamed"]["hypervolume"][0]
    assert results["guarded_paired"]["gamed − honest"]["hypervolume"]["difference"][0] == pytest.approx(
        guarded["hypervolume"][0] - results["methods"]["honest"]["guarded"]["hypervolume"][0]
    )
    report = format_report(results)
    assert "## Gaming guards" in report
    table = report.split("## Gaming guards")[1].split("### Guarded fronts")[0]
    header = next(line for line in table.splitlines() if line.startswith("| method |")).split(" | ")
    row = next(line for line in table.splitlines() if line.startswith("| gamed | (0, 1) |")).split(" | ")
    assert row[header.index("near_empty")].startswith("**1.000** (p ")  # worse than the base model: bold, with p
    assert "### Guarded fronts" in report


def test_fronts_on_other_weightings_or_a_reserved_label_are_refused():
    front = synthetic_front(steering(0.0))
    other = synthetic_front(steering(0.0))
    other.results = other.results[::-1]
    with pytest.raises(ValueError, match="same objectives .* and weightings"):
        compare_fronts({"a": [front], "b": [other]})
    with pytest.raises(ValueError, match="'base model' names the base model"):
        compare_fronts({"base model": [front]})
    with pytest.raises(ValueError, match=r"label=path\[,path...\]"):
        plan_fronts(["no-equals-sign"])
    with pytest.raises(ValueError, match="given twice"):
        plan_fronts(["a=x", "a=y"])


def test_gain_at_kl_interpolates_a_kl_series_per_weighting():
    kls = torch.tensor([[2.0, 1.0, 4.0], [6.0, 3.0, 8.0]], dtype=torch.float64)  # (A=2 α values, K=3 weightings)
    gains = torch.tensor([[0.10, 0.00, 0.30], [0.30, 0.20, 0.10]], dtype=torch.float64)
    out = gain_at_kl(kls, gains, torch.tensor([3.0, 3.0, 9.0], dtype=torch.float64))
    # k=0: a quarter of the way from KL 2 to 6; k=1: at the series' last point; k=2: beyond its range.
    assert out[0].item() == pytest.approx(0.15) and out[1].item() == pytest.approx(0.20) and math.isnan(out[2])
    series = [torch.tensor([[0.5, 0.5, 2.0]]), torch.tensor([[0.7, 0.5, 4.0]])]  # (K=1, m + 1): rewards, KL
    other, base, weights = torch.tensor([[0.6, 0.9, 3.0]]), torch.tensor([0.4, 0.5]), torch.tensor([[1.0, 0.0]])
    # Series gains 0.1 at KL 2 and 0.3 at KL 4 → 0.2 at KL 3; the other front gains 0.2 there: difference 0.
    assert matched_gain_difference(series, other, base, weights).item() == pytest.approx(0.0, abs=1e-6)
    assert gain_per_nat(torch.tensor([0.1, 0.3]), torch.tensor([2.0, 6.0])).item() == pytest.approx(0.05)


def test_kl_series_group_fronts_of_one_method_at_several_alphas():
    fronts = [ComparedFront("RS", "RS", ("rs",)), ComparedFront("full a0.02", "full a0.02", ("f2",))]
    fronts += [ComparedFront("full", "full", ("f",)), ComparedFront("multi (α=0.02)", "multi", ("m",), 0.02)]
    fronts += [ComparedFront("multi (α=1)", "multi", ("m",), 1.0)]
    series = plan_kl_series(fronts, [["full-CLP", "full a0.02", "full"]])
    assert series == {"multi": ["multi (α=0.02)", "multi (α=1)"], "full-CLP": ["full a0.02", "full"]}
    with pytest.raises(ValueError, match=r"--kl_series full-CLP: give a new series name, then two or more"):
        plan_kl_series(fronts, [["full-CLP", "full a0.02", "full a1"]])  # no front "full a1"
    with pytest.raises(ValueError, match=r"\['multi \(α=1\)'\] already belong to a KL series"):
        plan_kl_series(fronts, [["mixed", "full", "multi (α=1)"]])
    planned = plan_fronts(["CLP=a", "multi=b,c"], [["multi", "0.05", "0.5"]])
    assert [(f.label, f.kl_weight, f.stem(1)) for f in planned] == [
        ("CLP", None, "CLP-s1"),
        ("multi (α=0.05)", 0.05, "multi-a0.05-s1"),
        ("multi (α=0.5)", 0.5, "multi-a0.5-s1"),
    ]


# ------------------------------------------------------------------------------------------ the command, end to end


@pytest.fixture
def steerable_runs(tmp_path, saved_base_model, tokenizer):
    """Two methods of tiny steerable models with random LoRA blocks: "A" with two seeds, "B" with one."""
    runs = {}
    for name, seed in (("a0", 0), ("a1", 1), ("b0", 2)):
        torch.manual_seed(seed)
        steer = SteerableModel.from_base_model(
            demo.make_tiny_llama(seed=0),
            ["lower", "upper"],
            LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
            tokenizer=tokenizer,
        )
        steer.model.peft_config["default"].base_model_name_or_path = saved_base_model
        steer.save_pretrained(tmp_path / name)
        runs[name] = str(tmp_path / name)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Describe: river {i}\n"}) + "\n" for i in range(4)))
    return runs, str(prompts)


def test_trl_clp_compare_evaluates_runs_and_reuse_needs_neither_models_nor_rewards(steerable_runs, tmp_path, capsys):
    runs, prompts = steerable_runs
    output = tmp_path / "comparison"
    argv = ["compare", "--runs", f"A={runs['a0']},{runs['a1']}", f"B={runs['b0']}", "--prompts", prompts]
    argv += ["--reward_funcs", "lowercase", "uppercase", "--grid_points", "3", "--max_new_tokens", "6"]
    argv += ["--num_resamples", "50", "--base_samples_per_prompt", "2", "--output_dir", str(output)]
    cli(argv)
    printed = capsys.readouterr().out
    assert "A − B: hypervolume: " in printed and "lower margin: " in printed
    results = json.loads((output / "comparison.json").read_text())
    names = ["lower", "upper"]
    per_seed = []
    for stem in ("A-s0", "A-s1", "B-s0"):
        samples = [json.loads(line) for line in (output / f"{stem}.samples.jsonl").read_text().splitlines()]
        assert len(samples) == 3 * 4 * 2  # weightings × prompts × samples
        assert {s["prompt"] for s in samples} == {f"Describe: river {i}\n" for i in range(4)}
        per_seed.append(
            [[sum(s["rewards"][n] for s in samples if s["weights"] == w) / 8 for n in names] for w in WEIGHTINGS]
        )
    per_seed = torch.tensor(per_seed, dtype=torch.float64)  # (3 runs, K, m)
    means = {"A": per_seed[:2].mean(0), "B": per_seed[2]}
    for label in ("A", "B"):
        method = results["methods"][label]
        assert torch.tensor(method["rewards"], dtype=torch.float64).allclose(means[label], atol=1e-6)
        assert method["hypervolume"][0] == pytest.approx(hypervolume(means[label], torch.zeros(2)), abs=1e-6)
    difference = results["paired"]["A − B"]["hypervolume"]["difference"][0]
    assert difference == pytest.approx(
        results["methods"]["A"]["hypervolume"][0] - results["methods"]["B"]["hypervolume"][0]
    )
    base = [json.loads(line) for line in (output / "base.samples.jsonl").read_text().splitlines()]
    assert len(base) == 8 and all(s["kl"] == 0.0 for s in base)  # 4 prompts × 2 samples, adapters off
    for name in ("fronts.png", "equal_kl.png"):
        assert (output / name).stat().st_size > 1000
    assert "**Prompt:** Describe: river 0" in (output / "generations.md").read_text()
    assert "### A − B" in (output / "report.md").read_text()

    # --reuse from a copy of the folder, the runs gone, no rewards or prompts given: the same comparison.
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    (copy / "comparison.json").unlink()
    for path in runs.values():
        shutil.rmtree(path)
    cli(
        [
            "compare",
            "--reuse",
            "--runs",
            f"A={runs['a0']},{runs['a1']}",
            f"B={runs['b0']}",
            "--num_resamples",
            "50",
            "--grid_points",
            "3",
            "--base_samples_per_prompt",
            "2",
            "--output_dir",
            str(copy),
        ]
    )
    again = json.loads((copy / "comparison.json").read_text())
    assert again["methods"] == results["methods"] and again["paired"] == results["paired"]


def test_trl_clp_compare_help_and_refusals(steerable_runs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(["compare", "--help"])
    assert exit_info.value.code == 0
    shown = capsys.readouterr().out
    for flag in ("--runs", "--reuse", "--kl_weights_for", "--independent_seeds", "--significance", "--prompts_split"):
        assert flag in shown
    runs, prompts = steerable_runs
    with pytest.raises(SystemExit, match="Give --prompts and --reward_funcs"):
        cli(["compare", "--runs", f"A={runs['a0']}", "--output_dir", str(tmp_path / "out")])
    with pytest.raises(SystemExit, match=r"No saved evaluation for \['A-s0'\]"):
        cli(["compare", "--reuse", "--runs", f"A={runs['a0']}", "--output_dir", str(tmp_path / "out")])
    argv = ["compare", "--runs", f"A={runs['a0']}", "--prompts", prompts, "--reward_funcs", "lowercase", "uppercase"]
    with pytest.raises(SystemExit, match="not trained with KL-weight conditioning"):
        cli(argv + ["--kl_weights_for", "A", "0.1", "--output_dir", str(tmp_path / "out")])
    assert not list((tmp_path / "out").glob("*.samples.jsonl"))  # refused before any sampling


def test_report_headers_name_the_confidence_the_intervals_were_computed_at():
    """`--confidence 0.9` gives 90% intervals: every header of report.md says 90%, none says 95%."""
    fronts = {"clp": [synthetic_front(steering(0.0))], "soups": [synthetic_front(steering(0.05))]}
    base = synthetic_front(lambda k, p: [0.45, 0.4], kl=0.0)
    base.results, base.samples = base.results[:1], [s for s in base.samples if s["weights"] == WEIGHTINGS[0]]
    report = format_report(compare_fronts(fronts, base, num_resamples=50, confidence=0.9))
    assert "hypervolume [90% CI]" in report and "positivity margin [90% CI]" in report
    assert "A − B [90% CI]" in report
    assert "95%" not in report
