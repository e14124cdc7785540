"""The main job's code path, at toy size, and its YAML recipe."""

import importlib.util
import json
import os
import sys

import pytest

EXAMPLES = os.path.join(os.path.dirname(__file__), os.pardir, "examples")


@pytest.fixture(scope="module")
def train_clp():
    spec = importlib.util.spec_from_file_location("train_clp", os.path.join(EXAMPLES, "train_clp.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_clp"] = module  # dataclasses resolve the script's annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def test_main_job_trains_saves_and_writes_the_table(train_clp, tmp_path, capsys):
    out = tmp_path / "demo"
    argv = [
        "--output_dir", str(out), "--max_steps", "2", "--pretrain_steps", "5", "--num_train_prompts", "16",
        "--num_eval_prompts", "2", "--eval_grid_points", "3", "--eval_samples_per_prompt", "1",
        "--max_completion_length", "4", "--per_device_train_batch_size", "8", "--disable_tqdm", "True",
    ]
    train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
    rows = json.loads((out / "front.json").read_text())["results"]
    assert [row["weights"] for row in rows] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert (out / "front.csv").is_file() and (out / "clp_config.json").is_file()
    printed = capsys.readouterr().out
    assert "lowercase_reward" in printed and "with weight 1" in printed


def test_summarization_recipe_parses(train_clp):
    path = os.path.join(EXAMPLES, "configs", "tldr_summarization.yaml")
    script_args, training_args, model_args = train_clp.make_parser().parse_args_and_config(
        args=["--config", path, "--bf16", "False"]  # the recipe targets a GPU (bf16); this machine has none
    )
    assert script_args.reward_funcs == ["source_coverage", "brevity"]
    assert training_args.objective_names == ["coverage", "brevity"] and training_args.conditioning == "attn"
    assert model_args.model_name_or_path == "Qwen/Qwen2.5-0.5B" and model_args.lora_r == 16


def test_comparison_runner_writes_a_report(tmp_path):
    spec = importlib.util.spec_from_file_location("compare_baselines", os.path.join(EXAMPLES, "compare_baselines.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_baselines"] = module
    spec.loader.exec_module(module)
    args = module.CompareArguments(
        output_dir=str(tmp_path), seeds=[0], max_steps=3, early_step=1, pretrain_steps=2, num_eval_prompts=2,
        eval_samples_per_prompt=1, eval_grid_points=3, three_objective_grid_points=2,
        methods=["clp-full", "rewarded-soups", "prompting"], kl_weights=[0.05, 0.2],
        experiments=["two", "three", "kl", "fixed", "mixing"],
    )
    results = module.main(args)
    assert set(results["methods"]) == {"clp-full", "rewarded-soups", "prompting"}
    assert set(results["claims"]) == {
        "1_clp_dominates_rewarded_soups", "2_clp_more_steerable_than_prompting", "3_kl_conditioning_matches_dera",
        "4_three_rewards_value_at_least_rs", "5_clp_steerable_early",
    }
    assert [e["kl_weight"] for e in results["claims"]["3_kl_conditioning_matches_dera"]["per_kl_weight"]] == [0.05, 0.2]
    assert len(results["fixed_weights"]["value_per_weighting"]) == 3
    assert set(results["mixing"]) == {"parameter mixing", "logit mixing"}
    report = (tmp_path / "report.md").read_text()
    assert "| clp-full |" in report and "| prompting |" in report
    for figure in ("fronts_final.png", "fronts_early.png", "three_rewards_value.png", "kl_front.png", "mixing.png"):
        assert (tmp_path / figure).stat().st_size > 1000
