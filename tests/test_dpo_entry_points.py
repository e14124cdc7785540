"""`trl-clp train --trainer dpo`: its argument checks, recipes and shipped pairs, a run through the CLI whose model
loads, steers and serves like an online one, the held-out preference accuracy, and `accelerate launch` on 2 CPU
processes."""

import importlib.util
import json
import os
import subprocess
import sys
import warnings

import httpx
import pytest
import torch
from datasets import Dataset
from peft import LoraConfig

from trl_clp import MultiObjectiveDPOConfig, SteerableModel, demo, format_weighted_prompt, simplex_grid
from trl_clp.cli import main as cli
from trl_clp.preference_adapters import HELPSTEER2_ATTRIBUTES, PKU_SAFERLHF_OBJECTIVES
from trl_clp.preference_evaluation import evaluate_preferences
from trl_clp.rewards import lowercase_reward, uppercase_reward
from trl_clp.scripts import train as train_script

from .test_distributed import free_port

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir))
DEMO_RECIPE = os.path.join(ROOT, "examples", "configs", "dpo_demo.yaml")
PKU_RECIPE = os.path.join(ROOT, "examples", "configs", "dpo_pku_saferlhf.yaml")
DEMO_PAIRS = os.path.join(ROOT, "examples", "data", "demo_preferences")
# The offline recipe at toy size: a 2-step pre-trained demo model, 3 steps, 8 held-out pairs, 3 weightings.
TOY = ["--pretrain_steps", "2", "--max_steps", "3", "--num_eval_prompts", "8", "--eval_grid_points", "3"]
TOY += ["--disable_tqdm", "True"]


def parse(argv):
    """What `trl-clp train` parses: the parser chosen by `--trainer`/`--preference_format` (flags or YAML)."""
    parser = train_script.make_parser(
        trainer=train_script.chosen_trainer(argv),
        preference_format=train_script.early_option(argv, "preference_format"),
    )
    return parser.parse_args_and_config(args=argv)


def cli_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    capsys.readouterr()
    return str(exit_info.value.code)


def test_dpo_refuses_reward_funcs_and_a_missing_dataset_before_loading_a_model(capsys, monkeypatch):
    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the arguments were checked")

    monkeypatch.setattr(demo, "make_tiny_llama", no_model)
    base = ["train", "--trainer", "dpo", "--objective_names", "lower", "upper"]
    code = cli_error([*base, "--dataset_name", DEMO_PAIRS, "--reward_funcs", "lowercase", "uppercase"], capsys)
    assert code.startswith("trl-clp train: error: --reward_funcs does not apply to --trainer dpo")
    assert "Remove --reward_funcs" in code and "--objective_names" in code
    code = cli_error(base, capsys)
    assert code.startswith("trl-clp train: error: --trainer dpo needs preference pairs: pass --dataset_name")
    assert "--preference_format pku_saferlhf|helpsteer2|ultrafeedback" in code and "dpo_demo.yaml" in code
    code = cli_error(["train", "--preference_format", "pku_saferlhf"], capsys)
    assert "--preference_format applies to --trainer dpo" in code
    # A format's layout and objectives against the ones set: checked before the model is built.
    pku = [*base[:3], "--dataset_name", "PKU-Alignment/PKU-SafeRLHF", "--preference_format", "pku_saferlhf"]
    code = cli_error([*pku, "--preference_layout", "scores"], capsys)
    assert "gives the labels layout, but preference_layout is 'scores': set --preference_layout labels" in code
    code = cli_error([*pku, "--objective_names", "helpful", "harmless", "c"], capsys)
    assert "pku_saferlhf's objectives are ['helpful', 'harmless']; ['c'] are not among them" in code
    code = cli_error([*pku, "--objective_names", "helpful", "safe"], capsys)
    assert "['safe'] are not among them. Name them all of ['helpful', 'harmless'], in the order you want" in code
    helpsteer = [*base[:3], "--dataset_name", "nvidia/HelpSteer2", "--preference_format", "helpsteer2"]
    code = cli_error([*helpsteer, "--objective_names", "helpfulness", "brevity"], capsys)
    assert "['brevity'] are not among them. Name them among ['helpfulness', 'correctness'," in code


def test_dpo_takes_layout_and_objectives_from_the_preference_format():
    _, args, _ = parse(["--trainer", "dpo", "--dataset_name", "d", "--preference_format", "pku_saferlhf"])
    assert isinstance(args, MultiObjectiveDPOConfig)
    assert (args.preference_layout, args.objective_names) == ("labels", PKU_SAFERLHF_OBJECTIVES)
    _, args, _ = parse(["--trainer", "dpo", "--dataset_name", "d", "--preference_format", "helpsteer2"])
    assert (args.preference_layout, args.objective_names) == ("scores", HELPSTEER2_ATTRIBUTES)
    script, args, _ = parse(
        ["--trainer", "dpo", "--dataset_name", "d", "--preference_format", "helpsteer2", "--objective_names"]
        + ["helpfulness", "verbosity"]
    )
    assert args.objective_names == ["helpfulness", "verbosity"] and script.reward_funcs is None
    script, _, _ = parse([])  # the online trainers keep the demo's rewards by default
    assert script.reward_funcs == ["lowercase", "uppercase"]


def test_preference_format_writes_the_labels_in_the_order_of_objective_names(tmp_path):
    """`--objective_names harmless helpful` reorders PKU-SafeRLHF's labels rather than mislabelling them."""
    row = {"prompt": "p", "response_0": "a", "response_1": "b", "better_response_id": 1, "safer_response_id": 0}
    write_jsonl(tmp_path / "pku" / "train.jsonl", [row])
    argv = ["--trainer", "dpo", "--dataset_name", str(tmp_path / "pku"), "--preference_format", "pku_saferlhf"]
    for names, labels in ((["helpful", "harmless"], [-1, 1]), (["harmless", "helpful"], [1, -1])):
        script, args, _ = parse([*argv, "--objective_names", *names])
        train_script.check_preference_arguments(script, args)
        train_pairs, _ = train_script.load_preference_pairs(script, args)
        assert args.objective_names == names and train_pairs["objective_labels"] == [labels]


def test_preference_format_cuts_the_held_out_pairs_after_conversion(tmp_path):
    """HelpSteer2 pairs the rows of one prompt: the held-out cut must not split a prompt's rows before pairing."""

    def row(prompt, response, score):
        return {"prompt": prompt, "response": response, **dict.fromkeys(HELPSTEER2_ATTRIBUTES, score)}

    # Four tied answers, then the one better answer of the same prompt: every pair needs the fifth row.
    held_out = [row("Explain DNS.", f"answer {i}", 2) for i in range(4)] + [row("Explain DNS.", "best", 4)]
    write_jsonl(tmp_path / "hs" / "train.jsonl", [row("Name a fruit.", "Apple.", 4), row("Name a fruit.", "No.", 0)])
    write_jsonl(tmp_path / "hs" / "test.jsonl", held_out)
    argv = ["--trainer", "dpo", "--dataset_name", str(tmp_path / "hs"), "--preference_format", "helpsteer2"]
    script, args, _ = parse([*argv, "--num_eval_prompts", "1"])
    _, eval_pairs = train_script.load_preference_pairs(script, args)
    assert eval_pairs.to_list() == [
        {
            "prompt": "Explain DNS.",
            "chosen": "answer 0",
            "rejected": "best",
            "chosen_scores": [2.0] * 5,
            "rejected_scores": [4.0] * 5,
        }
    ]


def test_parsing_dpo_arguments_warns_about_nothing_the_user_did_not_write():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, args, _ = parse(["--trainer", "dpo", "--dataset_name", "d", "--objective_names", "a", "b"])
    assert [str(w.message) for w in caught if issubclass(w.category, FutureWarning)] == []
    assert args.activation_checkpointing is False  # DPO's CLI default, under the name transformers 5 reads


def test_dpo_recipes_parse():
    script, args, model = parse(["--config", DEMO_RECIPE])
    assert script.trainer == "dpo" and isinstance(args, MultiObjectiveDPOConfig)
    assert args.objective_names == ["lower", "upper"] and args.preference_layout == "labels"
    assert model.model_name_or_path is None and os.path.isdir(os.path.join(ROOT, script.dataset_name))
    script, args, model = parse(["--config", PKU_RECIPE, "--bf16", "False"])  # the recipe targets a GPU
    assert (script.trainer, script.preference_format) == ("dpo", "pku_saferlhf")
    assert args.objective_names == PKU_SAFERLHF_OBJECTIVES and args.preference_layout == "labels"
    assert args.conditioning == "attn" and model.model_name_or_path == "Qwen/Qwen2.5-0.5B-Instruct"


def test_demo_pairs_are_the_generators_output_labelled_by_the_demo_rewards(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_demo_preferences", os.path.join(ROOT, "examples", "data", "make_demo_preferences.py")
    )
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    generator.main(str(tmp_path))
    for split, count in (("train", 320), ("test", 64)):
        shipped = os.path.join(DEMO_PAIRS, f"{split}.jsonl")
        with open(shipped, "rb") as handle:
            assert handle.read() == (tmp_path / f"{split}.jsonl").read_bytes(), f"{shipped} is not the generator's"
        with open(shipped) as handle:
            rows = [json.loads(line) for line in handle]
        assert len(rows) == count and len({row["prompt"] for row in rows}) > count // 2
        for row in rows:
            assert row["chosen"] != row["rejected"] and row["chosen"].lower() == row["rejected"].lower()
            for label, reward in zip(row["objective_labels"], (lowercase_reward, uppercase_reward), strict=True):
                difference = reward([row["chosen"]])[0] - reward([row["rejected"]])[0]
                assert label == (1 if difference > 0 else -1)
        assert {tuple(row["objective_labels"]) for row in rows} == {(1, -1), (-1, 1)}
    with open(os.path.join(DEMO_PAIRS, "train.jsonl")) as handle:
        train_prompts = {json.loads(line)["prompt"] for line in handle}
    with open(os.path.join(DEMO_PAIRS, "test.jsonl")) as handle:
        assert not train_prompts & {json.loads(line)["prompt"] for line in handle}


@pytest.fixture(scope="module")
def dpo_run(tmp_path_factory):
    """`trl-clp train --config examples/configs/dpo_demo.yaml` at toy size, from the repository root."""
    out = tmp_path_factory.mktemp("dpo-cli") / "out"
    previous = os.getcwd()
    os.chdir(ROOT)  # the recipe's dataset path is relative to the repository root
    try:
        cli(["train", "--config", DEMO_RECIPE, "--output_dir", str(out), *TOY])
    finally:
        os.chdir(previous)
    return out


def test_cli_dpo_run_saves_a_model_that_loads_steers_and_serves(dpo_run):
    from trl_clp.serving import ServerConfig, ServerThread, create_app, load_steerable_model

    out = dpo_run
    config = json.loads((out / "clp_config.json").read_text())
    assert config["objective_names"] == ["lower", "upper"] and config["conditioning"] == "full"
    assert "## Steering this model" in (out / "README.md").read_text()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    assert any("rewards/lower/accuracies" in entry for entry in history)

    steer = SteerableModel.from_pretrained(str(out))  # the base model found through the adapter, as online
    prompt = "Describe: quiet river walks near the bridge\n"
    encoded = steer.tokenize_prompts([prompt, prompt])
    with steer.condition(torch.tensor([[1.0, 0.0], [0.0, 1.0]])):
        logits = steer(**encoded).logits[:, -1]
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # the two weightings give two policies

    # `trl-clp serve`'s loader and app: greedy completions equal the in-process model's at each weighting.
    served = load_steerable_model(str(out))
    with ServerThread(create_app(served, ServerConfig(model_name="clp", max_new_tokens=8))) as server:
        for weights in ([1.0, 0.0], [0.0, 1.0]):
            body = {"model": "clp", "prompt": prompt, "max_tokens": 8, "temperature": 0, "weights": weights}
            text = httpx.post(server.url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
            expected = steer.generate_from_prompts([prompt], weights, max_new_tokens=8, do_sample=False)
            assert text == expected[0]


def test_cli_dpo_run_reports_held_out_accuracy_per_weighting(dpo_run, capsys):
    out = dpo_run
    report = json.loads((out / "preference_accuracy.json").read_text())
    assert report["objective_names"] == ["lower", "upper"]
    rows = report["results"]
    assert [row["weights"] for row in rows] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    # Every held-out pair has one objective for each response: the corners decide all 8, the middle none.
    assert [row["num_pairs"] for row in rows] == [8, 0, 8]
    assert rows[1]["accuracy"] is None and rows[1]["margin"] is None
    for row in rows:
        for name in ("lower", "upper"):
            assert 0.0 <= row["objective_accuracy"][name] <= 1.0
        # The two objectives disagree on every pair: a pair the model orders as one orders it against the other.
        assert row["objective_accuracy"]["lower"] + row["objective_accuracy"]["upper"] == pytest.approx(1.0)
    assert rows[0]["accuracy"] == rows[0]["objective_accuracy"]["lower"]
    assert rows[2]["accuracy"] == rows[2]["objective_accuracy"]["upper"]


def signed_pairs(tokenizer, layout: str) -> list[dict]:
    """Held-out pairs (labels with abstentions, or scores with ties under some weightings), tokenized as TRL's DPO
    tokenizes plain text: prompt ids, then each completion's ids with EOS."""
    rows = []
    for i, prompt in enumerate(demo.make_prompt_dataset(6, seed=3)["prompt"]):
        chosen, rejected = ("quiet road", "QUIET ROAD") if i % 2 else ("OLD CITY", "Old city")
        row = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if layout == "labels":
            row["objective_labels"] = [[1, -1], [-1, 1], [0, 1], [1, 0], [-1, 1], [1, -1]][i]
        else:
            row["chosen_scores"] = [[1.0, 0.0], [0.0, 2.0], [0.5, 0.5], [2.0, 0.0], [0.0, 1.0], [1.0, 1.0]][i]
            row["rejected_scores"] = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0], [0.0, 2.0], [1.0, 0.0], [0.0, 0.0]][i]
        row["prompt_ids"] = tokenizer(prompt)["input_ids"]
        row["chosen_ids"] = tokenizer(chosen + tokenizer.eos_token)["input_ids"]
        row["rejected_ids"] = tokenizer(rejected + tokenizer.eos_token)["input_ids"]
        rows.append(row)
    return rows


def sequence_log_prob(model, prompt_ids, completion_ids) -> float:
    """Summed log-probability of the completion after the prompt: one unpadded sequence, plain softmax."""
    ids = torch.tensor([prompt_ids + completion_ids])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].double(), dim=-1)
    targets = ids[0, 1:]
    return sum(log_probs[t, targets[t]].item() for t in range(len(prompt_ids) - 1, ids.size(1) - 1))


def test_preference_accuracy_names_still_import_from_trl_clp_evaluation():
    import trl_clp.evaluation as old
    import trl_clp.preference_evaluation as new

    for name in ("evaluate_preferences", "PreferenceAccuracy", "format_preference_table"):
        assert getattr(old, name) is getattr(new, name)


@pytest.mark.parametrize("layout", ["labels", "scores"])
def test_held_out_accuracy_matches_a_recomputation_with_merged_models(tokenizer, layout):
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    steer = SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), ["lower", "upper"], lora, tokenizer=tokenizer)
    rows = signed_pairs(tokenizer, layout)
    weightings = simplex_grid(2, 3)
    margin = 0.75 if layout == "scores" else 0.0
    results = evaluate_preferences(
        steer, Dataset.from_list(rows), weightings, layout, score_margin=margin, batch_size=4
    )  # batches of 4 and 2 pairs, right-padded
    bad = [
        {**row, "objective_labels": [3, -1]} if i == 2 else row
        for i, row in enumerate(signed_pairs(tokenizer, "labels"))
    ]
    with pytest.raises(ValueError, match="Row 2 of the held-out dataset has objective_labels=\\[3, -1\\]"):
        evaluate_preferences(steer, Dataset.from_list(bad), weightings, "labels")

    base = demo.make_tiny_llama(seed=0).eval()
    reference = [
        [sequence_log_prob(base, row["prompt_ids"], row[f"{side}_ids"]) for side in ("chosen", "rejected")]
        for row in rows
    ]
    for weights, result in zip(weightings.tolist(), results, strict=True):
        merged = steer.merge(weights).eval()  # another path: the weighting folded into plain weights
        deltas = []
        for row, (ref_chosen, ref_rejected) in zip(rows, reference, strict=True):
            chosen = sequence_log_prob(merged, row["prompt_ids"], row["chosen_ids"]) - ref_chosen
            rejected = sequence_log_prob(merged, row["prompt_ids"], row["rejected_ids"]) - ref_rejected
            deltas.append(chosen - rejected)
        assert all(abs(d) > 1e-3 for d in deltas)  # signs are not decided by rounding
        if layout == "labels":
            signs = [row["objective_labels"] for row in rows]
            # w prefers `chosen` when the weight of the objectives preferring it exceeds that of the others.
            sides = [sum(w * s for w, s in zip(weights, labels, strict=True)) for labels in signs]
        else:
            signs = [
                [(c > r) - (c < r) for c, r in zip(row["chosen_scores"], row["rejected_scores"], strict=True)]
                for row in rows
            ]
            sides = [
                sum(w * (c - r) for w, c, r in zip(weights, row["chosen_scores"], row["rejected_scores"], strict=True))
                for row in rows
            ]
            sides = [side if abs(side) >= margin else 0.0 for side in sides]
        decided = [(side > 0) - (side < 0) for side in sides]
        agree = [d * (1 if delta > 0 else -1) for d, delta in zip(decided, deltas, strict=True) if d]
        assert result.weights == weights and result.num_pairs == len(agree)
        if agree:
            assert result.accuracy == pytest.approx(sum(a > 0 for a in agree) / len(agree))
            oriented = [d * delta for d, delta in zip(decided, deltas, strict=True) if d]
            assert result.margin == pytest.approx(sum(oriented) / len(oriented), abs=1e-4)
        else:
            assert result.accuracy is None and result.margin is None
        for i, name in enumerate(["lower", "upper"]):
            voiced = [(s[i], delta) for s, delta in zip(signs, deltas, strict=True) if s[i]]
            expected = sum((delta > 0) == (s > 0) for s, delta in voiced) / len(voiced)
            assert result.objective_accuracy[name] == pytest.approx(expected)


def test_accelerate_launch_trains_dpo_on_two_cpu_processes(tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    command += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_ip"]
    command += ["127.0.0.1", "--main_process_port", str(free_port()), "-m", "trl_clp.cli", "train", "--config"]
    command += [DEMO_RECIPE, "--use_cpu", "True", "--output_dir", str(out), *TOY]
    command[command.index("--max_steps") + 1] = "2"
    environment = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    result = subprocess.run(command, cwd=ROOT, env=environment, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    state = json.loads((out / "trainer_state.json").read_text())
    # 2 steps of 8 pairs on each of 2 processes: 32 of the 320 training pairs, a tenth of an epoch (one process: 0.05).
    assert state["global_step"] == 2 and state["epoch"] == pytest.approx(0.1)
    steer = SteerableModel.from_pretrained(str(out))
    assert steer.objective_names == ["lower", "upper"]
    assert json.loads((out / "preference_accuracy.json").read_text())["results"][0]["num_pairs"] == 8


def test_held_out_accuracy_of_a_prompting_model_reads_the_weighting_in_the_policys_prompt(tokenizer):
    """The prompting baseline: the policy sees the weighting written into the prompt, the reference the data's."""
    torch.manual_seed(0)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "up_proj"], init_lora_weights=False)
    steer = SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0), ["lower", "upper"], lora, conditioning="prompt", tokenizer=tokenizer
    )
    rows = signed_pairs(tokenizer, "labels")
    weightings = simplex_grid(2, 3)
    results = evaluate_preferences(steer, Dataset.from_list(rows), weightings, "labels", batch_size=4)
    base = demo.make_tiny_llama(seed=0).eval()
    template = steer.conditioning_config.prompt_template
    for weights, result in zip(weightings.tolist(), results, strict=True):
        deltas = []
        for row in rows:
            weighted = tokenizer(format_weighted_prompt(row["prompt"], weights, ["lower", "upper"], template))
            logratios = [
                sequence_log_prob(steer.model, weighted["input_ids"], row[f"{side}_ids"])
                - sequence_log_prob(base, row["prompt_ids"], row[f"{side}_ids"])
                for side in ("chosen", "rejected")
            ]
            deltas.append(logratios[0] - logratios[1])
        for i, name in enumerate(["lower", "upper"]):
            voiced = [(row["objective_labels"][i], d) for row, d in zip(rows, deltas, strict=True)]
            voiced = [(s, d) for s, d in voiced if s]
            assert result.objective_accuracy[name] == pytest.approx(
                sum((d > 0) == (s > 0) for s, d in voiced) / len(voiced)
            )
        sides = [sum(w * s for w, s in zip(weights, row["objective_labels"], strict=True)) for row in rows]
        oriented = [(1 if side > 0 else -1) * d for side, d in zip(sides, deltas, strict=True) if side]
        assert result.num_pairs == len(oriented) and result.margin == pytest.approx(
            sum(oriented) / len(oriented), abs=1e-4
        )
    # Written into the prompt, the weighting changes the policy: the margins differ between weightings.
    assert len({round(r.margin, 4) for r in results}) == 3


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


SMALL_RUN = ["--max_steps", "2", "--per_device_train_batch_size", "4", "--eval_grid_points", "3"]
SMALL_RUN += ["--disable_tqdm", "True", "--learning_rate", "0.02"]


def test_cli_dpo_converts_a_public_layout_with_its_adapter(tmp_path, saved_base_model, capsys):
    """A PKU-SafeRLHF-shaped local folder through `--preference_format`: objectives and held-out pairs from the
    adapter (`better_response_id`, `safer_response_id` → labels [helpful, harmless])."""

    def rows(count, offset):
        return [
            {
                "prompt": f"Describe: river {i}\n",
                "response_0": "a calm river",
                "response_1": "A CALM RIVER",
                "better_response_id": i % 2,
                "safer_response_id": (i // 2) % 2,
            }
            for i in range(offset, offset + count)
        ]

    data = tmp_path / "pku"
    write_jsonl(data / "train.jsonl", rows(8, 0))
    write_jsonl(data / "test.jsonl", rows(6, 100))
    out = tmp_path / "out"
    argv = ["train", "--trainer", "dpo", "--dataset_name", str(data), "--preference_format", "pku_saferlhf"]
    cli([*argv, "--model_name_or_path", saved_base_model, "--output_dir", str(out), *SMALL_RUN])
    assert json.loads((out / "clp_config.json").read_text())["objective_names"] == PKU_SAFERLHF_OBJECTIVES
    report = json.loads((out / "preference_accuracy.json").read_text())
    assert report["objective_names"] == PKU_SAFERLHF_OBJECTIVES
    corners = {tuple(row["weights"]): row for row in report["results"]}
    # Every converted pair has a label from each objective, so each corner decides all 6 held-out pairs.
    assert corners[(1.0, 0.0)]["num_pairs"] == corners[(0.0, 1.0)]["num_pairs"] == 6
    assert "helpful: accuracy" in capsys.readouterr().out


def test_cli_dpo_trains_on_one_scores_file_and_says_nothing_is_held_out(tmp_path, saved_base_model, capsys):
    pairs = tmp_path / "pairs.jsonl"
    write_jsonl(
        pairs,
        [
            {"prompt": f"Describe: road {i}\n", "chosen": "old road", "rejected": "OLD ROAD"}
            | {"chosen_scores": [1.0, float(i % 3)], "rejected_scores": [0.0, 1.5]}
            for i in range(8)
        ],
    )
    out = tmp_path / "out"
    argv = ["train", "--trainer", "dpo", "--dataset_name", str(pairs), "--preference_layout", "scores"]
    argv += ["--objective_names", "lower", "upper", "--model_name_or_path", saved_base_model]
    cli([*argv, "--output_dir", str(out), *SMALL_RUN])
    captured = capsys.readouterr()
    printed = captured.out
    assert "No held-out pairs (no test split, no --dataset_eval_split): not evaluated." in printed
    for bar in ("Adding EOS to train dataset", "Tokenizing train dataset", "Dropping fully truncated"):
        assert bar not in captured.err  # TRL's dataset-preparation bars are left out
    assert not (out / "preference_accuracy.json").exists()
    assert SteerableModel.from_pretrained(str(out)).objective_names == ["lower", "upper"]
    assert json.loads((out / "trainer_state.json").read_text())["global_step"] == 2
