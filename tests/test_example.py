"""The main job's code path at toy size, its YAML recipes, the Accelerate configs, the comparison runner."""

import importlib.util
import json
import math
import os
import sys

import pytest

from .conftest import bos_tokenizer, toy_main_job_argv

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
    argv = toy_main_job_argv(out)
    train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
    rows = json.loads((out / "front.json").read_text())["results"]
    assert [row["weights"] for row in rows] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert (out / "front.csv").is_file() and (out / "clp_config.json").is_file()
    printed = capsys.readouterr().out
    assert "lowercase_reward" in printed and "with weight 1" in printed
    # The console keeps the table and its legend; the logged metrics go to trainer_state.json, not to the console.
    assert "kl = mean KL to the base model" in printed and "'rewards/" not in printed and "'loss'" not in printed
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/lowercase_reward/mean" in entry for entry in history)
    assert "## Steering this model" in (out / "README.md").read_text()


def test_trl_clp_train_is_the_example_script(train_clp, tmp_path, capsys):
    from trl_clp.cli import main as cli

    assert train_clp.main is __import__("trl_clp.scripts.train", fromlist=["main"]).main
    recipe = os.path.join(EXAMPLES, "configs", "tldr_summarization.yaml")
    parsed = [train_clp.make_parser().parse_args_and_config(args=["--config", recipe, "--bf16", "False"])]
    from trl_clp.scripts.train import make_parser

    parsed.append(
        make_parser(prog="trl-clp train").parse_args_and_config(args=["--config", recipe, "--bf16", "False"])
    )
    assert parsed[0][0] == parsed[1][0] and parsed[0][2] == parsed[1][2]  # same script and model arguments
    out = tmp_path / "cli"
    cli(
        [
            "train",
            *toy_main_job_argv(
                out, max_steps=1, pretrain_steps=2, num_train_prompts=8, num_eval_prompts=1, eval_grid_points=2
            ),
        ]
    )
    rows = json.loads((out / "front.json").read_text())["results"]
    assert [row["weights"] for row in rows] == [[1.0, 0.0], [0.0, 1.0]]
    assert "Steerable model: " + str(out) in capsys.readouterr().out


RECIPES = {
    "tldr_summarization.yaml": (["nli", "rougeL"], "attn", "trl-lib/tldr"),
    "tldr_three_rewards.yaml": (["nli", "rougeL", "brevity"], "full", "trl-lib/tldr"),
    "xsum_summarization.yaml": (["nli", "rougeL"], "attn", "EdinburghNLP/xsum"),
    "tldr_summarization_local.yaml": (["nli", "rougeL"], "attn", "data/tldr"),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipes_parse(train_clp, recipe):
    path = os.path.join(EXAMPLES, "configs", recipe)
    script_args, training_args, model_args = train_clp.make_parser().parse_args_and_config(
        args=["--config", path, "--bf16", "False"]  # the recipes target a GPU (bf16); this machine has none
    )
    rewards, conditioning, dataset = RECIPES[recipe]
    assert script_args.reward_funcs == rewards and script_args.dataset_name == dataset
    assert training_args.conditioning == conditioning and len(training_args.objective_names) == len(rewards)
    assert script_args.nli_model and model_args.lora_r == 16 and model_args.model_name_or_path


def test_xsum_recipe_builds_prompts_from_the_document(train_clp):
    path = os.path.join(EXAMPLES, "configs", "xsum_summarization.yaml")
    script_args, _, _ = train_clp.make_parser().parse_args_and_config(args=["--config", path, "--bf16", "False"])
    prompt = script_args.prompt_format.format(document="A" * 5000, summary="s", id="1")
    assert prompt.startswith("Article: AAA") and prompt.endswith("\nOne-sentence summary:") and len(prompt) < 3100
    assert (script_args.premise_column, script_args.reference_column) == ("document", "summary")


def test_local_recipe_runs_on_a_local_model_nli_model_and_dataset_file(train_clp, tmp_path, tokenizer, nli_model_path):
    """The summarization recipe's code path: local model, JSON-lines dataset, NLI and ROUGE rewards, evaluation."""
    from trl_clp import demo

    model_path = tmp_path / "models" / "policy"
    demo.make_tiny_llama(seed=0).save_pretrained(model_path)
    tokenizer.save_pretrained(model_path)
    data = tmp_path / "data" / "tldr"
    data.mkdir(parents=True)
    for split, count in (("train", 16), ("test", 4)):
        rows = [
            {"prompt": f"POST: the cat sat on mat {i}\nTL;DR:", "completion": " the cat sat"} for i in range(count)
        ]
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "out"
    argv = [
        "--config",
        os.path.join(EXAMPLES, "configs", "tldr_summarization_local.yaml"),
        "--model_name_or_path",
        str(model_path),
        "--dataset_name",
        str(data),
        "--nli_model",
        nli_model_path,
        "--output_dir",
        str(out),
        "--bf16",
        "False",
        "--max_steps",
        "2",
        "--per_device_train_batch_size",
        "8",
        "--gradient_accumulation_steps",
        "1",
        "--max_completion_length",
        "4",
        "--num_eval_prompts",
        "2",
        "--eval_grid_points",
        "3",
        "--eval_samples_per_prompt",
        "1",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--disable_tqdm",
        "True",
    ]
    train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
    results = json.loads((out / "front.json").read_text())
    assert results["objective_names"] == ["faithfulness", "rouge"]
    for row in results["results"]:
        assert 0.0 <= row["rewards"]["faithfulness"] <= 1.0 and 0.0 <= row["rewards"]["rouge"] <= 1.0
    assert json.loads((out / "clp_config.json").read_text())["conditioning"] == "attn"


def test_main_job_with_load_in_4bit_trains_on_a_quantized_policy(train_clp, tmp_path, saved_base_model, monkeypatch):
    bnb = pytest.importorskip(
        "bitsandbytes", reason='bitsandbytes is not installed: pip install "trl-clp[quantization]"'
    )
    import trl_clp.trainer

    built = []
    original_init = trl_clp.trainer.MultiObjectiveTrainer.__init__

    def recording_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(trl_clp.trainer.MultiObjectiveTrainer, "__init__", recording_init)
    argv = [
        "--model_name_or_path",
        saved_base_model,
        "--load_in_4bit",
        "True",
        "--bnb_4bit_quant_type",
        "nf4",
        "--dtype",
        "float32",
        "--output_dir",
        str(tmp_path / "out"),
        "--max_steps",
        "1",
        "--num_eval_prompts",
        "2",
        "--eval_grid_points",
        "2",
        "--eval_samples_per_prompt",
        "1",
        "--max_completion_length",
        "4",
        "--num_train_prompts",
        "16",
        "--disable_tqdm",
        "True",
        "--bf16",
        "False",
    ]
    try:
        train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
    except Exception as error:
        if not built:
            pytest.skip(f"bitsandbytes {bnb.__version__} cannot load a 4-bit model here: {error}")
        raise
    (trainer,) = built
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in trainer.model.modules())
    assert json.loads((tmp_path / "out" / "front.json").read_text())["results"]


@pytest.mark.parametrize("config", ["multi_gpu.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml", "fsdp.yaml"])
def test_accelerate_configs_load(config):
    from accelerate.commands.config.config_args import load_config_from_file

    loaded = load_config_from_file(os.path.join(EXAMPLES, "accelerate_configs", config))
    assert loaded.mixed_precision == "bf16"
    expected = {"multi_gpu.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP"}.get(config, "DEEPSPEED")
    assert loaded.distributed_type.value == expected
    if "zero" in config:
        assert loaded.deepspeed_config["zero_stage"] == int(config[-6])


def test_comparison_runner_writes_a_report(tmp_path):
    spec = importlib.util.spec_from_file_location("compare_baselines", os.path.join(EXAMPLES, "compare_baselines.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["compare_baselines"] = module
    spec.loader.exec_module(module)
    args = module.CompareArguments(
        output_dir=str(tmp_path),
        seeds=[0],
        max_steps=3,
        early_step=1,
        pretrain_steps=2,
        num_eval_prompts=2,
        eval_samples_per_prompt=1,
        eval_grid_points=3,
        three_objective_grid_points=2,
        methods=["clp-full", "rewarded-soups", "prompting"],
        kl_weights=[0.05, 0.2],
        experiments=["two", "three", "kl", "fixed", "mixing"],
    )
    results = module.main(args)
    assert set(results["methods"]) == {"clp-full", "rewarded-soups", "prompting"}
    assert set(results["claims"]) == {
        "1_clp_dominates_rewarded_soups",
        "2_clp_more_steerable_than_prompting",
        "3_kl_conditioning_matches_dera",
        "4_three_rewards_value_at_least_rs",
        "5_clp_steerable_early",
    }
    assert [e["kl_weight"] for e in results["claims"]["3_kl_conditioning_matches_dera"]["per_kl_weight"]] == [
        0.05,
        0.2,
    ]
    assert len(results["fixed_weights"]["value_per_weighting"]) == 3
    assert set(results["mixing"]) == {"parameter mixing", "logit mixing"}
    report = (tmp_path / "report.md").read_text()
    assert "| clp-full |" in report and "| prompting |" in report
    claim_lines = {line[0]: line for line in report.splitlines() if line[:1].isdigit() and line[1:3] == ". "}

    # Each claim's numbers are recomputed from the fronts the runner saved, and its verdict matches them (one seed:
    # no interval, so the verdict is the sign of the mean).
    from trl_clp.evaluation import Front
    from trl_clp.pareto import additive_epsilon, fraction_dominated

    final = {m: Front.load(str(tmp_path / "fronts" / f"{m}-final-seed0.json")) for m in results["methods"]}
    volumes = {m: front.hypervolume([0, 0]) for m, front in final.items()}
    for method, volume in volumes.items():
        assert results["methods"][method]["final"]["hypervolume"][0] == pytest.approx(volume)
        assert results["methods"][method]["final"]["range"][0][0] == pytest.approx(
            final[method].steerability()["range"][0]
        )
    claim = results["claims"]["1_clp_dominates_rewarded_soups"]
    clp, rs = final["clp-full"].rewards(), final["rewarded-soups"].rewards()
    difference = claim["hypervolume_difference"][0]
    assert difference == pytest.approx(volumes["clp-full"] - volumes["rewarded-soups"])
    assert claim["share_of_rs_points_dominated_by_clp"][0] == pytest.approx(fraction_dominated(clp, rs))
    assert claim["share_of_clp_points_dominated_by_rs"][0] == pytest.approx(fraction_dominated(rs, clp))
    assert claim["epsilon_clp_to_cover_rs"][0] == pytest.approx(additive_epsilon(clp, rs))
    # The verdict: the paired bootstrap's (seeds and prompts), from the library's comparison of the final fronts.
    paired = claim["paired_hypervolume_difference"]
    assert paired["difference"][0] == pytest.approx(difference)
    low, high = paired["difference"][1:]
    expected = "CLP beats RS" if low > 0 else "RS beats CLP" if high < 0 else "no difference detected"
    assert f"— {expected}: hypervolume of the seed-averaged fronts CLP − RS {difference:+.4f}" in claim_lines["1"]
    comparison = results["comparison"]
    assert comparison["methods"]["clp-full"]["hypervolume"][0] == pytest.approx(volumes["clp-full"])
    assert "### clp-full − rewarded-soups" in report
    claim = results["claims"]["2_clp_more_steerable_than_prompting"]
    assert claim["clp_range"] == results["methods"]["clp-full"]["final"]["range"]
    assert claim["prompting_range"] == results["methods"]["prompting"]["final"]["range"]
    gaps = [c[0] - p[0] for c, p in zip(claim["clp_range"], claim["prompting_range"], strict=True)]
    assert (
        claim_lines["2"]
        .split("range gap per objective: ")[1]
        .startswith(", ".join(f"{'holds' if gap > 0 else 'fails'} on this seed" for gap in gaps))
    )
    claim = results["claims"]["3_kl_conditioning_matches_dera"]
    behind = []
    for entry in claim["per_kl_weight"]:
        alpha = entry["kl_weight"]
        for name in ("clp", "dera"):  # V = R − α·KL at w = (1, 0)
            reward, kl, value = (entry[f"{name}_{key}"][0] for key in ("reward", "kl", "value"))
            assert value == pytest.approx(reward - alpha * kl, abs=1e-5)
        assert entry["value_difference"][0] == pytest.approx(entry["clp_value"][0] - entry["dera_value"][0])
        if entry["value_difference"][0] <= 0:
            behind.append(alpha)
    ratio = claim["dera_over_clp_decode_time"][0]
    assert math.isfinite(ratio) and ratio > 0
    assert f"— {'holds' if not behind else 'fails at α = ' + str(behind)}:" in claim_lines["3"]
    claim = results["claims"]["4_three_rewards_value_at_least_rs"]
    differences = [entry["difference"][0] for entry in claim["value_difference_per_weighting"]]
    assert len(differences) == 3  # simplex_grid(3, 2): the corners
    share = claim["share_of_weightings_with_clp_value_at_least_rs"][0]
    assert share == pytest.approx(sum(d >= 0 for d in differences) / len(differences))
    assert f"— {'holds' if share == 1.0 else 'fails'}:" in claim_lines["4"]
    for figure in ("fronts_final.png", "fronts_early.png", "three_rewards_value.png", "kl_front.png", "mixing.png"):
        assert (tmp_path / figure).stat().st_size > 1000


def test_main_job_trains_and_evaluates_a_chat_model_on_conversations(train_clp, tmp_path):
    """A conversational dataset end to end: training, the final evaluation on held-out conversations, the card."""
    from trl_clp import demo
    from trl_clp.rewards import lowercase_reward

    model_path = tmp_path / "chat-model"
    demo.make_tiny_llama(seed=0).save_pretrained(model_path)
    bos_tokenizer().save_pretrained(model_path)
    data = tmp_path / "chats"
    data.mkdir()
    for split, count in (("train", 16), ("test", 2)):
        rows = [{"prompt": [{"role": "user", "content": f"Describe: {split} river {i}\n"}]} for i in range(count)]
        (data / f"{split}.jsonl").write_text("\n".join(json.dumps(row) for row in rows))
    out = tmp_path / "out"
    argv = toy_main_job_argv(out, model_name_or_path=model_path, dataset_name=data, report_to="none")
    train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
    samples = [json.loads(line) for line in (out / "front_samples.jsonl").read_text().splitlines()]
    held_out = [[{"role": "user", "content": f"Describe: test river {i}\n"}] for i in range(2)]
    assert [s["prompt"] for s in samples] == held_out * 3  # 3 weightings × 2 conversations × 1 sample
    for sample in samples:  # scored on the text of the assistant message, as in training
        assert sample["rewards"]["lowercase_reward"] == pytest.approx(lowercase_reward([sample["completion"]])[0])
    assert "generate_from_prompts([conversation] * 2" in (out / "README.md").read_text()


TONE_PROMPTS = os.path.join(EXAMPLES, "data", "tone_prompts")


def test_the_real_model_prompts_are_chats_with_unseen_held_out_subjects():
    splits = {}
    for split in ("train", "test"):
        with open(os.path.join(TONE_PROMPTS, f"{split}.jsonl")) as handle:
            splits[split] = [json.loads(line) for line in handle]
    assert len(splits["train"]) >= 300 and len(splits["test"]) >= 64
    for rows in splits.values():
        assert all([m["role"] for m in row["prompt"]] == ["user"] for row in rows)
        assert {row["kind"] for row in rows} == {"review", "customer", "product", "advice", "place"}
    train_texts = {row["prompt"][0]["content"] for row in splits["train"]}
    assert not train_texts & {row["prompt"][0]["content"] for row in splits["test"]}


@pytest.mark.parametrize("recipe", ["smollm2_tone.yaml", "smollm2_tone_three.yaml"])
def test_real_model_recipe_runs_on_a_tiny_chat_stand_in(train_clp, tmp_path, recipe):
    """The SmolLM2 recipe's whole path (shipped chat prompts, text rewards, conversational evaluation) on a tiny
    chat model in place of the converted SmolLM2 folder."""
    from trl_clp import demo
    from trl_clp.rewards import sentiment_reward

    model_path = tmp_path / "chat-model"
    demo.make_tiny_llama(seed=0).save_pretrained(model_path)
    bos_tokenizer().save_pretrained(model_path)
    out = tmp_path / "out"
    argv = ["--config", os.path.join(EXAMPLES, "configs", recipe), "--model_name_or_path", str(model_path)]
    argv += ["--dataset_name", TONE_PROMPTS, "--output_dir", str(out), "--max_steps", "1"]
    argv += ["--per_device_train_batch_size", "3", "--max_completion_length", "4", "--num_eval_prompts", "2"]
    argv += ["--eval_grid_points", "2", "--eval_samples_per_prompt", "1", "--report_to", "none"]
    script_args, training_args, _ = train_clp.make_parser().parse_args_and_config(args=argv)
    assert script_args.reward_funcs[:2] == ["sentiment", "objectivity"] and training_args.beta == 0.2
    train_clp.main(script_args, training_args, _)
    samples = [json.loads(line) for line in (out / "front_samples.jsonl").read_text().splitlines()]
    with open(os.path.join(TONE_PROMPTS, "test.jsonl")) as handle:
        held_out = [json.loads(line)["prompt"] for line in handle][:2]
    assert {json.dumps(s["prompt"]) for s in samples} == {json.dumps(p) for p in held_out}
    for sample in samples:  # the text scorers read the assistant message's text, as in training
        assert sample["rewards"]["positivity"] == pytest.approx(sentiment_reward([sample["completion"]])[0])


def test_real_model_comparison_scores_methods_from_their_samples(train_clp, tmp_path, monkeypatch):
    """examples/compare_real_model.py on two tiny chat models (CLP and prompting): fronts, hypervolume and margins
    recomputed here from the completions it wrote, the base model with its adapter off, and --reuse."""
    from trl_clp import demo
    from trl_clp.pareto import hypervolume

    model_path = tmp_path / "chat-model"
    demo.make_tiny_llama(seed=0).save_pretrained(model_path)
    bos_tokenizer().save_pretrained(model_path)
    runs = {}
    for conditioning in ("full", "prompt"):
        out = tmp_path / conditioning
        argv = ["--config", os.path.join(EXAMPLES, "configs", "smollm2_tone.yaml"), "--model_name_or_path"]
        argv += [str(model_path), "--dataset_name", TONE_PROMPTS, "--output_dir", str(out), "--max_steps", "1"]
        argv += ["--per_device_train_batch_size", "3", "--max_completion_length", "4", "--num_eval_prompts", "1"]
        argv += ["--eval_grid_points", "2", "--conditioning", conditioning, "--learning_rate", "0.05"]
        train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
        runs[conditioning] = str(out)
    spec = importlib.util.spec_from_file_location(
        "compare_real_model", os.path.join(EXAMPLES, "compare_real_model.py")
    )
    compare = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(compare)
    prompts = tmp_path / "held_out.jsonl"
    with open(os.path.join(TONE_PROMPTS, "test.jsonl")) as handle:
        prompts.write_text("".join(handle.readlines()[:4]))
    output = tmp_path / "comparison"
    argv = ["compare_real_model.py", "--runs", f"CLP={runs['full']}", f"prompting={runs['prompt']}", "--prompts"]
    argv += [str(prompts), "--reward_funcs", "sentiment", "objectivity", "--grid_points", "3", "--max_new_tokens"]
    argv += ["4", "--num_resamples", "50", "--base_samples_per_prompt", "2", "--output_dir", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    compare.main()
    results = json.loads((output / "comparison.json").read_text())
    for label in ("CLP", "prompting"):
        samples = [json.loads(line) for line in (output / f"{label}-s0.samples.jsonl").read_text().splitlines()]
        weightings = [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
        assert len(samples) == 3 * 4 * 2  # weightings × prompts × samples
        means = [
            [sum(s["rewards"][n] for s in samples if s["weights"] == w) / 8 for n in ("positivity", "objectivity")]
            for w in weightings
        ]
        method = results["methods"][label]
        assert method["rewards"][0] + method["rewards"][1] + method["rewards"][2] == pytest.approx(sum(means, []))
        point, low, high = method["hypervolume"]
        assert point == pytest.approx(hypervolume(means, [0.0, 0.0])) and low <= point <= high
        assert method["margins"]["positivity"][0] == pytest.approx(means[0][0] - means[2][0])
        assert method["margins"]["objectivity"][0] == pytest.approx(means[2][1] - means[0][1])
    base = [json.loads(line) for line in (output / "base.samples.jsonl").read_text().splitlines()]
    assert len(base) == 8 and all(s["kl"] == 0.0 for s in base)  # 4 prompts × 2 samples, adapters off
    assert not any("[weights:" in s["prompt"][0]["content"] for s in base)
    assert (output / "fronts.png").stat().st_size > 1000 and "**Prompt:**" in (output / "generations.md").read_text()
    assert "| CLP | 1 | " in (output / "report.md").read_text()
    monkeypatch.setattr(sys, "argv", argv + ["--reuse"])
    (output / "comparison.json").unlink()
    compare.main()  # from the files written: the same figures without sampling again
    assert json.loads((output / "comparison.json").read_text())["methods"] == results["methods"]


@pytest.fixture(scope="module")
def compare_real_model():
    spec = importlib.util.spec_from_file_location(
        "compare_real_model", os.path.join(EXAMPLES, "compare_real_model.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tone_runs(train_clp, tmp_path_factory):
    """Two tiny chat models trained one step with the SmolLM2 recipe: full-CLP at α = 0.2, and full-CLP conditioned
    on α ∈ [0.05, 0.5] (`--kl_weights 0.05 0.5`). One step leaves a random model's LoRA B matrices at zero (its
    completions' rewards tie within each group: no advantage), so seeded noise on them stands in for training: each
    block, the KL block included, then moves the policy away from the base model."""
    import torch
    from safetensors.torch import load_file, save_file

    from trl_clp import demo

    root = tmp_path_factory.mktemp("tone_runs")
    model_path = root / "chat-model"
    demo.make_tiny_llama(seed=0).save_pretrained(model_path)
    bos_tokenizer().save_pretrained(model_path)
    runs = {}
    for name, extra in (("plain", []), ("multi", ["--kl_weights", "0.05", "0.5"])):
        argv = ["--config", os.path.join(EXAMPLES, "configs", "smollm2_tone.yaml"), "--model_name_or_path"]
        argv += [str(model_path), "--dataset_name", TONE_PROMPTS, "--output_dir", str(root / name), "--max_steps"]
        argv += ["1", "--per_device_train_batch_size", "3", "--max_completion_length", "4", "--num_eval_prompts"]
        argv += ["1", "--eval_grid_points", "2", "--learning_rate", "0.05", "--report_to", "none", *extra]
        train_clp.main(*train_clp.make_parser().parse_args_and_config(args=argv))
        adapter = root / name / "adapter_model.safetensors"
        generator = torch.Generator().manual_seed(len(runs))
        tensors = load_file(adapter)
        for key in sorted(tensors):
            if "lora_B" in key:
                tensors[key] = torch.randn(tensors[key].shape, generator=generator) * 0.3
        save_file(tensors, adapter)
        runs[name] = str(root / name)
    prompts = root / "held_out.jsonl"
    with open(os.path.join(TONE_PROMPTS, "test.jsonl")) as handle:
        prompts.write_text("".join(handle.readlines()[:4]))
    runs["prompts"] = str(prompts)
    return runs


def test_kl_weights_for_refuses_a_model_it_cannot_steer_before_sampling(compare_real_model, tone_runs, tmp_path):
    from trl_clp.comparison import check_kl_weights, plan_fronts

    def plan(runs, kl_weights_for):
        fronts = plan_fronts(runs, kl_weights_for)
        check_kl_weights(fronts)
        return fronts

    with pytest.raises(ValueError, match=r"not trained with KL-weight conditioning.*train it with `--kl_weights"):
        plan([f"CLP={tone_runs['plain']}"], [["CLP", "0.2"]])
    with pytest.raises(ValueError, match=r"α = 0.01 is below 0.05.*use α >= 0.05"):
        plan([f"multi={tone_runs['multi']}"], [["multi", "0.01", "0.5"]])
    with pytest.raises(ValueError, match=r"no run has that label; the labels of --runs are \['multi'\]"):
        plan([f"multi={tone_runs['multi']}"], [["multi-CLP", "0.5"]])
    with pytest.raises(ValueError, match="give the α values after the label"):
        plan([f"multi={tone_runs['multi']}"], [["multi"]])
    fronts = plan([f"CLP={tone_runs['plain']}", f"multi={tone_runs['multi']}"], [["multi", "0.05", "0.5"]])
    assert [(f.label, f.kl_weight, f.stem(0)) for f in fronts] == [
        ("CLP", None, "CLP-s0"),
        ("multi (α=0.05)", 0.05, "multi-a0.05-s0"),
        ("multi (α=0.5)", 0.5, "multi-a0.5-s0"),
    ]
    # From the command line: refused before the first model is sampled.
    argv = ["--runs", f"multi={tone_runs['multi']}", f"CLP={tone_runs['plain']}"]
    argv += ["--prompts", tone_runs["prompts"], "--reward_funcs", "sentiment", "objectivity"]
    argv += ["--kl_weights_for", "CLP", "0.2", "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="not trained with KL-weight conditioning"):
        compare_real_model.main(argv)
    assert not list((tmp_path / "out").glob("*.samples.jsonl"))


def test_real_model_comparison_at_several_kl_weights(compare_real_model, tone_runs, tmp_path, monkeypatch):
    """--kl_weights_for: one front per α of a model trained conditioned on α; the guards, the equal-KL view (gains,
    gain per nat, matched KL) and the α section, recomputed here from the completions the script wrote."""
    from trl_clp.comparison import english_word_share, words

    output = tmp_path / "comparison"
    argv = ["compare_real_model.py", "--runs", f"CLP={tone_runs['plain']}", f"multi={tone_runs['multi']}"]
    argv += [f"copy={tone_runs['multi']}", "--kl_weights_for", "multi", "0.05", "0.5", "--kl_weights_for", "copy"]
    argv += ["0.05", "--prompts", tone_runs["prompts"], "--reward_funcs", "sentiment", "objectivity"]
    argv += ["--grid_points", "3", "--max_new_tokens", "16", "--num_resamples", "50", "--base_samples_per_prompt"]
    argv += ["2", "--output_dir", str(output)]
    monkeypatch.setattr(sys, "argv", argv)
    compare_real_model.main()
    results = json.loads((output / "comparison.json").read_text())
    names, weightings = ("positivity", "objectivity"), [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]

    def read(stem):
        return [json.loads(line) for line in (output / f"{stem}.samples.jsonl").read_text().splitlines()]

    base = read("base")
    base_means = [sum(s["rewards"][n] for s in base) / len(base) for n in names]
    stems = {
        "CLP": ("CLP-s0", 0.2),
        "multi (α=0.05)": ("multi-a0.05-s0", 0.05),
        "multi (α=0.5)": ("multi-a0.5-s0", 0.5),
    }
    stems["copy (α=0.05)"] = ("copy-a0.05-s0", 0.05)
    assert list(results["methods"]) == list(stems)
    view, recomputed = results["equal_kl"], {}
    for label, (stem, alpha) in stems.items():
        samples = read(stem)
        method = results["methods"][label]
        assert method["kl_weight"] == alpha and view["per_front"][label]["kl_weight"] == alpha
        for s in samples:  # each completion's value used the α it was steered to
            value = sum(w * s["rewards"][n] for w, n in zip(s["weights"], names, strict=True)) - alpha * s["kl"]
            assert s["value"] == pytest.approx(value, abs=1e-5)
        gains, kls = [], []
        for k, w in enumerate(weightings):
            at_w = [s for s in samples if s["weights"] == w]
            assert len(at_w) == 4 * 2  # prompts × samples
            means = [sum(s["rewards"][n] for s in at_w) / len(at_w) for n in names]
            gains.append(sum(wi * (m - b) for wi, m, b in zip(w, means, base_means, strict=True)))
            kls.append(sum(s["kl"] for s in at_w) / len(at_w))
            point, low, high = view["per_front"][label]["gain"][k]
            assert point == pytest.approx(gains[-1]) and low <= point <= high
            texts = [s["completion"] for s in at_w]
            full = [t for t in texts if len(words(t)) >= 3]
            guards = method["guards"]
            assert guards["empty"][k] == pytest.approx(1 - len(full) / len(texts))
            english = [english_word_share(t) >= 0.5 for t in full]
            assert guards["english"][k] == (
                pytest.approx(sum(english) / len(full)) if full else pytest.approx(math.nan, nan_ok=True)
            )
        assert view["per_front"][label]["kl"] == pytest.approx(kls) == method["kl"]
        assert view["per_front"][label]["gain_per_nat"][0] == pytest.approx(sum(gains) / sum(kls))
        recomputed[label] = (gains, kls)
    # The series "multi" (α = 0.05, 0.5) read at each other front's KL. "copy (α=0.05)" is the same model steered to
    # the same α with the same seed: its KL is the series' own at every weighting, and the difference 0.
    assert view["series"] == {"multi": ["multi (α=0.05)", "multi (α=0.5)"]}
    matched = view["matched_kl"]["multi"]
    assert matched["copy (α=0.05)"]["weightings"] == weightings
    assert matched["copy (α=0.05)"]["gain_difference"][0] == pytest.approx(0.0, abs=1e-9)
    series_gains, series_kls = zip(*(recomputed[label] for label in view["series"]["multi"]), strict=True)
    gains, kls = recomputed["CLP"]
    expected = []
    for k, w in enumerate(weightings):
        (x0, y0), (x1, y1) = sorted((series_kls[a][k], series_gains[a][k]) for a in range(2))
        if x0 <= kls[k] <= x1:
            share = 0.0 if x1 == x0 else (kls[k] - x0) / (x1 - x0)
            expected.append((w, y0 + share * (y1 - y0) - gains[k]))
    assert matched["CLP"]["weightings"] == [w for w, _ in expected]
    if expected:
        assert matched["CLP"]["gain_difference"][0] == pytest.approx(sum(d for _, d in expected) / len(expected))
    report = (output / "report.md").read_text()
    section = report.split("## KL weight α")[1].split("## Equal KL")[0]
    rows = [line.split(" | ")[0][2:] for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[1:] == ["multi (α=0.05)", "multi (α=0.5)", "CLP", "copy (α=0.05)"]  # the KL series first, by α
    assert "| multi | copy (α=0.05) | (1, 0), (0.5, 0.5), (0, 1) | +0.000 [" in report
    assert (output / "equal_kl.png").stat().st_size > 1000


@pytest.mark.parametrize("trainer", ["rloo", "grpo", "dpo"])
def test_weighting_schedule_comes_from_yaml_and_flags(tmp_path, trainer):
    from trl_clp.scripts.train import make_parser

    recipe = tmp_path / "schedule.yaml"
    recipe.write_text(
        "objective_names: [a, b]\nweight_distribution: dirichlet\ndirichlet_concentration: 0.3\n"
        "one_hot_fraction: 0.25\none_hot_anneal_fraction: 0.5\n"
    )
    parser = make_parser(prog="trl-clp train", trainer=trainer)
    argv = ["--config", str(recipe), "--one_hot_final_probability", "0.1", "--bf16", "False"]
    _, training_args, _ = parser.parse_args_and_config(args=argv)
    assert (training_args.one_hot_fraction, training_args.one_hot_anneal_fraction) == (0.25, 0.5)
    assert training_args.one_hot_final_probability == 0.1 and training_args.has_weighting_schedule
    recipe.write_text(recipe.read_text() + "one_hot_fraction: 0.8\n")  # 0.8 + 0.5 > 1: refused, naming the fix
    with pytest.raises(ValueError, match="shorten one of them"):
        parser.parse_args_and_config(args=["--config", str(recipe), "--bf16", "False"])


def test_second_pair_recipe_mirrors_the_tone_recipe_and_its_numbers_come_from_the_base_samples(train_clp):
    """smollm2_readability_descriptiveness.yaml differs from smollm2_tone.yaml only in its rewards, and the
    conflict its header reports is recomputed here from the base model's committed samples."""
    import numpy as np
    import yaml

    from trl_clp.rewards import descriptiveness_reward, readability_reward

    recipes = {}
    for recipe in ("smollm2_tone.yaml", "smollm2_readability_descriptiveness.yaml"):
        path = os.path.join(EXAMPLES, "configs", recipe)
        with open(path) as handle:
            recipes[recipe] = yaml.safe_load(handle)
        train_clp.make_parser().parse_args_and_config(args=["--config", path, "--bf16", "False"])  # it parses
    tone, pair = recipes["smollm2_tone.yaml"], recipes["smollm2_readability_descriptiveness.yaml"]
    assert pair["reward_funcs"] == pair["objective_names"] == ["readability", "descriptiveness"]
    differing = {"reward_funcs", "objective_names", "output_dir"}
    assert {k: v for k, v in tone.items() if k not in differing} == {
        k: v for k, v in pair.items() if k not in differing
    }

    samples = os.path.join(EXAMPLES, os.pardir, "docs", "results", "smollm2_tone", "base.samples.jsonl")
    with open(samples) as handle:
        texts = [json.loads(line)["completion"] for line in handle]
    readability, descriptiveness = np.array(readability_reward(texts)), np.array(descriptiveness_reward(texts))
    assert len(texts) == 288
    assert (round(readability.mean(), 3), round(readability.std(ddof=1), 3)) == (0.679, 0.193)
    assert (round(descriptiveness.mean(), 3), round(descriptiveness.std(ddof=1), 3)) == (0.107, 0.071)
    assert round(np.corrcoef(readability, descriptiveness)[0, 1], 2) == -0.40
