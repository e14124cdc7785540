"""The SmolLM2 DPO recipe's pieces on a tiny model: `examples/make_tone_preferences.py` end to end (pairs sampled and
scored, both layouts, the budget it counts), `examples/configs/smollm2_tone_dpo.yaml` parsed (its budget against the
online recipe's) and run at toy size on those pairs, and the run compared by `trl-clp compare`."""

import importlib.util
import json
import os
import sys

import pytest
import yaml

from trl_clp import demo
from trl_clp.cli import main as cli
from trl_clp.rewards import objectivity_reward, sentiment_reward

from .conftest import bos_tokenizer
from .test_dpo_entry_points import parse

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
RECIPE = os.path.join(ROOT, "examples", "configs", "smollm2_tone_dpo.yaml")
ONLINE_RECIPE = os.path.join(ROOT, "examples", "configs", "smollm2_tone.yaml")
PROMPTS = os.path.join(ROOT, "examples", "data", "tone_prompts")
REWARDS = (sentiment_reward, objectivity_reward)


def read_jsonl(path) -> list[dict]:
    with open(path) as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def tone_pairs(tmp_path_factory):
    """A tiny Llama with a chat template saved to a folder, and the script's dataset sampled from it."""
    root = tmp_path_factory.mktemp("tone")
    base = root / "base"
    demo.make_tiny_llama(seed=0).save_pretrained(base)
    bos_tokenizer().save_pretrained(base)
    spec = importlib.util.spec_from_file_location(
        "make_tone_preferences", os.path.join(ROOT, "examples", "make_tone_preferences.py")
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_tone_preferences"] = module  # dataclasses resolve the script's annotations through it
    spec.loader.exec_module(module)
    args = module.TonePreferenceArguments(
        model_name_or_path=str(base),
        dataset_name=PROMPTS,
        output_dir=str(root / "pairs"),
        completions_per_prompt=3,
        max_new_tokens=6,
        num_train_prompts=4,
        num_test_prompts=3,
    )
    budget = module.main(args)
    return base, root / "pairs", budget


def test_pairs_are_the_base_models_samples_scored_once_in_both_layouts(tone_pairs):
    _, out, budget = tone_pairs
    assert json.loads((out / "budget.json").read_text()) == budget
    assert budget["objective_names"] == ["positivity", "objectivity"]
    train_prompts = [row["prompt"] for row in read_jsonl(os.path.join(PROMPTS, "train.jsonl"))[:4]]
    test_prompts = [row["prompt"] for row in read_jsonl(os.path.join(PROMPTS, "test.jsonl"))[:3]]
    for split, prompts in (("train", train_prompts), ("test", test_prompts)):
        labels = read_jsonl(out / "labels" / f"{split}.jsonl")
        scores = read_jsonl(out / "scores" / f"{split}.jsonl")
        counted = budget["splits"][split]
        assert counted["prompts"] == len(prompts) and counted["completions"] == 3 * len(prompts)
        assert counted["pairs"] == {"labels": len(labels), "scores": len(scores)}
        assert counted["pairs_dropped"]["labels"] == 3 * len(prompts) - len(labels)  # 3 pairs per prompt
        # Both layouts are the same completions: the pairs a tie on both objectives drops from both.
        key = lambda row: json.dumps([row["prompt"], row["chosen"], row["rejected"]])  # noqa: E731
        assert [key(row) for row in labels] == [key(row) for row in scores] and labels
        completions = set()
        for label_row, score_row in zip(labels, scores, strict=True):
            assert label_row["prompt"] in prompts  # conversations, from this split's prompts only
            for side in ("chosen", "rejected"):
                message = label_row[side]
                assert message[0]["role"] == "assistant" and len(message) == 1  # TRL's conversational completion
                completions.add(json.dumps([label_row["prompt"], message]))
            # The scores are the scorers' values; the labels are the signs of their differences.
            for i, reward in enumerate(REWARDS):
                chosen, rejected = reward([label_row["chosen"]])[0], reward([label_row["rejected"]])[0]
                assert score_row["chosen_scores"][i] == pytest.approx(chosen, abs=1e-12)
                assert score_row["rejected_scores"][i] == pytest.approx(rejected, abs=1e-12)
                assert label_row["objective_labels"][i] == (chosen > rejected) - (chosen < rejected)
        # Each distinct completion scored once per reward function, though both layouts read the scores.
        assert len(completions) * 2 <= counted["scorer_calls"] <= counted["completions"] * 2


def test_tone_dpo_recipe_parses_with_the_online_recipes_budget():
    script, args, model = parse(["--config", RECIPE])
    assert script.trainer == "dpo" and script.reward_funcs is None
    assert args.objective_names == ["positivity", "objectivity"] and args.preference_layout == "labels"
    assert args.conditioning == "full" and args.weight_distribution == "dirichlet"
    assert script.dataset_name == "outputs/tone_preferences/labels"
    assert model.model_name_or_path == "models/smollm2-135m-instruct" and model.use_peft
    with open(ONLINE_RECIPE) as handle:
        online = yaml.safe_load(handle)
    # Sequences trained on: 2 per pair, as many as the online recipe's completions; the same model, LoRA and seed.
    assert (
        2 * args.per_device_train_batch_size * args.max_steps
        == online["per_device_train_batch_size"] * online["max_steps"]
    )
    assert [args.objective_names, model.lora_r, model.lora_alpha, args.seed] == [
        online["objective_names"],
        online["lora_r"],
        online["lora_alpha"],
        online["seed"],
    ]
    assert args.dirichlet_concentration == online["dirichlet_concentration"]
    assert sorted(model.lora_target_modules) == sorted(online["lora_target_modules"])
    # The baselines the docs' commands train: Rewarded Soups (one-hot) and the scores layout parse too.
    _, soups, _ = parse(["--config", RECIPE, "--weight_distribution", "one_hot"])
    assert soups.weight_distribution == "one_hot"
    _, scores, _ = parse(["--config", RECIPE, "--preference_layout", "scores"])
    assert scores.preference_layout == "scores"


def test_tone_dpo_recipe_trains_on_the_scripts_pairs_and_the_run_compares(tone_pairs, tmp_path, capsys):
    base, pairs, _ = tone_pairs
    out = tmp_path / "dpo"
    toy = ["--model_name_or_path", str(base), "--max_steps", "2", "--eval_grid_points", "3", "--disable_tqdm", "True"]
    cli(["train", "--config", RECIPE, "--dataset_name", str(pairs / "labels"), "--output_dir", str(out), *toy])
    config = json.loads((out / "clp_config.json").read_text())
    assert config["objective_names"] == ["positivity", "objectivity"]
    accuracy = json.loads((out / "preference_accuracy.json").read_text())
    assert [row["weights"] for row in accuracy["results"]] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    # `trl-clp compare` reads the DPO run as it reads an online one (the recipe's sampling, held-out prompts).
    comparison = tmp_path / "comparison"
    cli(
        ["compare", "--runs", f"DPO-CLP={out}", "--prompts", os.path.join(PROMPTS, "test.jsonl"), "--num_prompts", "2"]
        + ["--reward_funcs", "sentiment", "objectivity", "--temperature", "0.8", "--max_new_tokens", "4"]
        + ["--samples_per_prompt", "1", "--base_samples_per_prompt", "1", "--grid_points", "3"]
        + ["--num_resamples", "20", "--output_dir", str(comparison)]
    )
    capsys.readouterr()
    results = json.loads((comparison / "comparison.json").read_text())
    assert list(results["methods"]) == ["DPO-CLP"] and (comparison / "report.md").is_file()
