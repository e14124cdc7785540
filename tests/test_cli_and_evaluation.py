"""Evaluation over a weight grid and the `trl-clp` command, on a steerable model saved to a temp dir."""

import json
import os

import pytest
import torch
from peft import LoraConfig

from trl_clp import MultiObjectiveTrainer, SteerableModel, demo, simplex_grid
from trl_clp.cli import main
from trl_clp.evaluation import Front, evaluate_front
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import TARGETS, bos_tokenizer, tiny_config, training_prompt_ids


@pytest.fixture
def saved_steerable(tmp_path, saved_base_model, tokenizer):
    torch.manual_seed(0)
    steer = SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0),
        ["lower", "upper"],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        tokenizer=tokenizer,
    )
    steer.model.peft_config["default"].base_model_name_or_path = saved_base_model
    steer.save_pretrained(tmp_path / "clp")
    return str(tmp_path / "clp")


def test_evaluation_is_seeded_and_ordered_like_the_grid(saved_steerable, tokenizer):
    steer = SteerableModel.from_pretrained(saved_steerable)
    prompts = list(demo.make_prompt_dataset(4, seed=1)["prompt"])
    kwargs = dict(num_samples=2, max_new_tokens=6, batch_size=5)  # batches mix weightings
    rewards = [lowercase_reward, uppercase_reward]
    first = evaluate_front(steer, tokenizer, prompts, rewards, simplex_grid(2, 3), **kwargs)
    again = evaluate_front(steer, tokenizer, prompts, rewards, simplex_grid(2, 3), **kwargs)
    assert [r.weights for r in first.results] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    assert [r.rewards for r in first.results] == [r.rewards for r in again.results]
    assert all(r.num_completions == 8 for r in first.results)
    # The adapter's blocks differ, so the sampled completions (hence the KL to the reference) differ per weighting.
    assert len({round(r.kl, 6) for r in first.results}) == 3
    for r in first.results:
        low, high = r.reward_ci["lower"]
        assert low <= r.rewards["lower"] <= high
    table = first.format_table()
    assert "lower" in table.splitlines()[0] and len(table.splitlines()) == 4


def test_value_is_weighted_reward_minus_kl(saved_steerable, tokenizer):
    steer = SteerableModel.from_pretrained(saved_steerable)
    front = evaluate_front(
        steer,
        tokenizer,
        ["Describe: a\n", "Describe: b\n"],
        [lowercase_reward, uppercase_reward],
        simplex_grid(2, 3),
        kl_weight=0.5,
        max_new_tokens=5,
    )
    for r in front.results:
        expected = r.weights[0] * r.rewards["lower"] + r.weights[1] * r.rewards["upper"] - 0.5 * r.kl
        assert r.value == pytest.approx(expected, abs=1e-6)


def test_kl_to_reference_is_zero_for_a_fresh_adapter(tmp_path, tokenizer):
    # PEFT's default init (B = 0) leaves the policy equal to the reference.
    steer = SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0),
        ["lower", "upper"],
        LoraConfig(r=4, target_modules=["q_proj"]),
        tokenizer=tokenizer,
    )
    front = evaluate_front(
        steer, tokenizer, ["Describe: a\n"], [lowercase_reward, uppercase_reward], simplex_grid(2, 2), max_new_tokens=5
    )
    assert all(abs(r.kl) < 1e-5 for r in front.results)
    json_path, csv_path = front.save(str(tmp_path))
    assert Front.load(json_path) == front
    assert open(csv_path).read().startswith("w_lower,w_upper,reward_lower")
    assert front.hypervolume([-1.0, -1.0]) > 0


def test_cli_info_and_evaluate(saved_steerable, tmp_path, capsys):
    main(["info", saved_steerable])
    assert json.loads(capsys.readouterr().out)["objective_names"] == ["lower", "upper"]
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Describe: quiet river\\n\nDescribe: old city\\n\n")
    main(
        [
            "evaluate",
            saved_steerable,
            "--prompts",
            str(prompts),
            "--reward_funcs",
            "lowercase",
            "uppercase",
            "--grid_points",
            "3",
            "--max_new_tokens",
            "4",
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    rows = json.loads((tmp_path / "eval" / "evaluation.json").read_text())["results"]
    assert [row["weights"] for row in rows] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]


def test_cli_export_writes_a_plain_lora_equal_to_the_conditioned_model(saved_steerable, saved_base_model, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    main(["export", saved_steerable, str(tmp_path / "lora"), "--weights", "0.25,0.75"])
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(saved_base_model), str(tmp_path / "lora"))
    steer = SteerableModel.from_pretrained(saved_steerable)
    input_ids = torch.tensor([[1, 60, 61, 62]])
    with torch.no_grad(), steer.condition(torch.tensor([0.25, 0.75])):
        expected = steer(input_ids=input_ids).logits
    with torch.no_grad():
        assert torch.allclose(plain.eval()(input_ids=input_ids).logits, expected, atol=1e-5)
    with pytest.raises(SystemExit, match="comma-separated"):
        main(["export", saved_steerable, str(tmp_path / "bad"), "--weights", "half,half"])


def test_cli_rejects_a_reward_count_that_does_not_match(saved_steerable, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Describe: a\n")
    with pytest.raises(SystemExit, match="one reward function per objective"):
        main(["evaluate", saved_steerable, "--prompts", str(prompts), "--reward_funcs", "lowercase"])


def test_plots_are_written_as_png(saved_steerable, tmp_path, tokenizer):
    from trl_clp.plotting import plot_fronts, plot_fronts_over_steps, plot_value_ratio

    steer = SteerableModel.from_pretrained(saved_steerable)
    prompts = ["Describe: a\n", "Describe: b\n"]
    rewards = [lowercase_reward, uppercase_reward]
    front = evaluate_front(steer, tokenizer, prompts, rewards, simplex_grid(2, 3), max_new_tokens=4)
    other = evaluate_front(steer, tokenizer, prompts, rewards, simplex_grid(2, 3), max_new_tokens=4, seed=1)
    paths = [
        plot_fronts({"a": front, "b": other}, str(tmp_path / "fronts.png")),
        plot_fronts_over_steps({10: front, 20: other}, str(tmp_path / "steps.png")),
        plot_value_ratio(front, other, str(tmp_path / "ratio.png")),
    ]
    for path in paths:
        with open(path, "rb") as handle:
            assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    front.save(str(tmp_path / "a"))
    other.save(str(tmp_path / "b"))
    main(
        [
            "plot",
            str(tmp_path / "a" / "front.json"),
            str(tmp_path / "b" / "front.json"),
            "--output",
            str(tmp_path / "cli.png"),
        ]
    )
    assert (tmp_path / "cli.png").stat().st_size > 1000


def _recording_reward(seen: list):
    """A reward function that records the (prompt, completion_ids) rows it scores and returns 0."""

    def reward(prompts, completions, completion_ids, **kwargs):
        seen.extend(zip(prompts, completion_ids, strict=True))
        return [0.0] * len(prompts)

    return reward


def sequence_kl(steer, tokenizer, weights, prompt, completion_ids, temperature=1.0) -> float:
    """`Σ_t log π_w(y_t) − log π_ref(y_t)` of one unpadded row, recomputed with the logits divided by `temperature`."""
    input_ids = torch.tensor([tokenizer(prompt)["input_ids"] + list(completion_ids)])
    start = input_ids.size(1) - len(completion_ids)

    def log_probs():
        logits = steer.model(input_ids=input_ids).logits[0, start - 1 : -1] / temperature  # (C, V)
        return torch.log_softmax(logits, -1).gather(-1, input_ids[0, start:, None]).sum().item()

    with torch.no_grad():
        with steer.condition(weights):
            policy = log_probs()
        with steer.model.disable_adapter():
            reference = log_probs()
    return policy - reference


def test_kl_is_measured_at_the_sampling_temperature(saved_steerable, tokenizer):
    steer = SteerableModel.from_pretrained(saved_steerable)
    prompts = ["Describe: a\n", "Describe: b\n"]  # same length: no padding, so each row can be rescored alone
    weights = torch.tensor([[0.25, 0.75]])
    seen = []
    front = evaluate_front(
        steer,
        tokenizer,
        prompts,
        [_recording_reward(seen), lowercase_reward],
        weights,
        num_samples=3,
        max_new_tokens=6,
        temperature=0.7,
    )
    assert len(seen) == 6
    at_sampling = sum(sequence_kl(steer, tokenizer, weights[0], p, ids, 0.7) for p, ids in seen) / len(seen)
    at_one = sum(sequence_kl(steer, tokenizer, weights[0], p, ids, 1.0) for p, ids in seen) / len(seen)
    assert front.results[0].kl == pytest.approx(at_sampling, abs=1e-4)
    assert abs(at_sampling - at_one) > 1e-2  # the temperature matters on these completions


def test_value_is_trainings_scalarisation_and_skips_unscorable_completions(saved_steerable, tokenizer):
    from trl_clp.scalarization import scalarize_rewards

    steer = SteerableModel.from_pretrained(saved_steerable)
    prompts = ["Describe: a\n", "Describe: b\n", "Describe: c\n"]  # same length: rows rescored alone below
    seen = []

    def lower(prompts, completions, completion_ids, **kwargs):  # not applicable to prompt b
        seen.extend(zip(prompts, completion_ids, strict=True))
        scores = lowercase_reward(completions)
        return [None if p.endswith("b\n") else s for p, s in zip(prompts, scores, strict=True)]

    def upper(prompts, completions, **kwargs):  # not applicable to prompts b and c
        return [None if p[-2] in "bc" else s for p, s in zip(prompts, uppercase_reward(completions), strict=True)]

    weights = torch.tensor([[0.25, 0.75]])
    front = evaluate_front(
        steer, tokenizer, prompts, [lower, upper], weights, kl_weight=0.5, num_samples=2, max_new_tokens=6
    )
    kl = torch.tensor([sequence_kl(steer, tokenizer, weights[0], p, ids) for p, ids in seen])  # (6,)
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for _, ids in seen]
    nan = float("nan")
    rewards = torch.tensor(
        [
            [
                nan if p.endswith("b\n") else lowercase_reward([t])[0],
                nan if p[-2] in "bc" else uppercase_reward([t])[0],
            ]
            for (p, _), t in zip(seen, texts, strict=True)
        ]
    )  # (6, 2): prompt b's rows are all NaN
    assert torch.isnan(rewards[2:4]).all() and not torch.isnan(rewards[[0, 1, 4, 5], 0]).any()
    values = scalarize_rewards(rewards, weights.expand(6, -1), kl, torch.full((6,), 0.5))  # the trainer's function
    assert torch.isnan(values[2:4]).all()
    expected = (values[0:2].mean() + values[4:6].mean()).item() / 2  # per prompt, then over the scorable prompts
    assert front.results[0].value == pytest.approx(expected, abs=1e-4)
    assert front.results[0].kl == pytest.approx(kl.mean().item(), abs=1e-4)  # the KL still counts every completion


def run_cli(argv, capsys):
    """`trl-clp argv` as a user runs it: the exit status and what it printed."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out + captured.err


def test_cli_errors_are_one_line_messages_without_a_traceback(saved_steerable, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, printed = run_cli(["info", "outputs/no-such-model"], capsys)
    assert (
        code
        == "trl-clp info: error: The folder 'outputs/no-such-model' does not exist (looked in " + str(tmp_path) + ")."
    )
    (tmp_path / "empty").mkdir()
    code, _ = run_cli(["info", "empty"], capsys)
    assert "'empty' has no clp_config.json: it is not a model saved by" in code
    for command in (
        ["evaluate", "./missing", "--prompts", "p.txt", "--reward_funcs", "lowercase", "uppercase"],
        ["export", "/no/such/folder", "lora", "--weights", "0.5,0.5"],
    ):
        code, _ = run_cli(command, capsys)
        assert "does not exist" in code and code.startswith(f"trl-clp {command[0]}: error: The folder")
    code, _ = run_cli(["evaluate", saved_steerable, "--prompts", "nowhere.txt", "--reward_funcs", "lowercase"], capsys)
    assert code == f"trl-clp evaluate: error: The prompts file 'nowhere.txt' does not exist (looked in {tmp_path})."
    code, _ = run_cli(["plot", "a/front.json"], capsys)
    assert code == f"trl-clp plot: error: The front file 'a/front.json' does not exist (looked in {tmp_path})."
    code, _ = run_cli(["export", saved_steerable, "lora", "--weights", "0.5,0.2"], capsys)
    assert (
        code.startswith("trl-clp export: error: ") and "sum to 1" in code
    )  # the library's own message, not a traceback


def test_cli_evaluate_rougeL_needs_and_reads_a_reference_column(saved_steerable, tmp_path, capsys):
    rouge_score = pytest.importorskip("rouge_score.rouge_scorer")
    text = tmp_path / "prompts.txt"
    text.write_text("Describe: old city road\\n\n")
    code, _ = run_cli(
        ["evaluate", saved_steerable, "--prompts", str(text), "--reward_funcs", "rougeL", "lowercase"], capsys
    )
    assert code.startswith("trl-clp evaluate: error: The rewards need a 'reference' column, which") and "JSONL" in code

    rows = [
        {"prompt": "Describe: old city road\n", "reference": "old city road", "source": "x"},
        {"prompt": "Describe: a quiet river\n", "reference": "a quiet river", "source": "y"},
    ]
    jsonl = tmp_path / "heldout.jsonl"
    jsonl.write_text("\n".join(json.dumps(row) for row in rows))
    csv_file = tmp_path / "heldout.csv"
    csv_file.write_text(
        "prompt,reference,source\n" + "".join(f'"{r["prompt"]}",{r["reference"]},{r["source"]}\n' for r in rows)
    )
    results = {}
    for path in (jsonl, csv_file):
        main(
            [
                "evaluate",
                saved_steerable,
                "--prompts",
                str(path),
                "--reward_funcs",
                "rougeL",
                "lowercase",
                "--grid_points",
                "2",
                "--max_new_tokens",
                "4",
                "--samples_per_prompt",
                "1",
                "--output_dir",
                str(tmp_path / path.suffix[1:]),
            ]
        )
        assert "kl = mean KL to the base model" in capsys.readouterr().out
        results[path.suffix] = json.loads((tmp_path / path.suffix[1:] / "evaluation.json").read_text())["results"]
    assert results[".jsonl"] == results[".csv"]  # same prompts and references, whichever the format

    # The ROUGE-L values are the mean F-measure of the sampled completions against each row's reference.
    steer = SteerableModel.from_pretrained(saved_steerable)
    scorer = rouge_score.RougeScorer(["rougeL"], use_stemmer=True)
    front = evaluate_front(
        steer,
        steer.tokenizer,
        [r["prompt"] for r in rows],
        [
            lambda completions, reference, **kw: [
                scorer.score(ref, c)["rougeL"].fmeasure for ref, c in zip(reference, completions, strict=True)
            ],
            lowercase_reward,
        ],
        simplex_grid(2, 2),
        max_new_tokens=4,
        reward_kwargs={"reference": [r["reference"] for r in rows]},
    )
    assert [r["rewards"]["lower"] for r in results[".jsonl"]] == pytest.approx(
        [r.rewards["lower"] for r in front.results]
    )


def test_cli_prompts_file_without_a_prompt_column_is_refused(saved_steerable, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "Describe: a"}\n')
    code, _ = run_cli(
        ["evaluate", saved_steerable, "--prompts", str(bad), "--reward_funcs", "lowercase", "uppercase"], capsys
    )
    assert code == f"trl-clp evaluate: error: {bad} has no `prompt` column; its columns are ['text']."


def test_cli_train_takes_the_scripts_arguments(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "usage: trl-clp train" in printed and "--reward_funcs" in printed and "--conditioning" in printed
    code, _ = run_cli(["train", "--no_such_flag", "1"], capsys)
    assert code.startswith("trl-clp train: error: ") and "['--no_such_flag', '1']" in code


def test_scripts_use_one_thread_on_a_small_machine_unless_told(monkeypatch):
    from trl_clp.scripts import limit_cpu_threads

    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        torch.set_num_threads(2)
        assert limit_cpu_threads() == 1 and torch.get_num_threads() == 1
        torch.set_num_threads(2)
        monkeypatch.setattr(os, "cpu_count", lambda: 32)  # a large machine keeps torch's default
        assert limit_cpu_threads() is None and torch.get_num_threads() == 2
        monkeypatch.setattr(os, "cpu_count", lambda: 2)
        monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice wins
        assert limit_cpu_threads() is None and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_bitsandbytes_cpu_kernel_warning_is_dropped_and_others_are_kept(caplog):
    import logging

    import trl_clp  # noqa: F401  (installs the filter)

    logger = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        logger.warning(
            "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
            "already `pip install kernels`",
            "no kernels",
        )
        logger.warning("another bitsandbytes warning")
    assert [record.getMessage() for record in caplog.records] == ["another bitsandbytes warning"]


# ---------------------------------------------------------------------------------------------- conversational prompts

CONVERSATIONS = [
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Describe: quiet river\n"}],
    [{"role": "user", "content": "Describe: old city\n"}],
]


def test_evaluation_feeds_conversations_to_the_model_as_the_trainer_does(tmp_path, prompts_dataset):
    tokenizer = bos_tokenizer()
    dataset = prompts_dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(tmp_path, conditioning="attn", chat_template_kwargs={"style": "brief"}),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    weightings = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # What the trainer hands to generation for these conversations: TRL's own tokenization, template keywords included.
    trained = training_prompt_ids(trainer, CONVERSATIONS, weightings[[0, 0]])
    assert all(tokenizer.decode(ids).endswith("<|assistant|><|brief|>") for ids in trained)
    steer = SteerableModel(trainer.model.eval(), trainer.conditioning_config, tokenizer)

    fed, seen = [], []
    generate = steer.model.generate

    def recording_generate(input_ids, attention_mask, **kwargs):
        fed.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask, strict=True))
        return generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    def recording_reward(prompts, completions, **kwargs):
        seen.append((prompts, completions))
        return lowercase_reward(completions)

    steer.model.generate = recording_generate
    front = evaluate_front(
        steer, tokenizer, CONVERSATIONS, [recording_reward, uppercase_reward], weightings, max_new_tokens=4
    )
    # Rows are ordered by weighting, then prompt: each weighting's rows are the training prompts, token for token.
    assert fed == trained + trained
    prompts, completions = seen[0]
    assert prompts == CONVERSATIONS + CONVERSATIONS
    # TRL's conversational completions: one assistant message, whose text the samples record.
    assert all(c[0]["role"] == "assistant" and len(c) == 1 for c in completions)
    assert [c[0]["content"] for c in completions] == [s["completion"] for s in front.samples]
    assert [s["prompt"] for s in front.samples] == CONVERSATIONS + CONVERSATIONS


def test_evaluation_samples_hold_each_completion_its_rewards_and_kl(saved_steerable, tokenizer, tmp_path):
    steer = SteerableModel.from_pretrained(saved_steerable)
    prompts = ["Describe: a\n", "Describe: b\n"]
    front = evaluate_front(
        steer,
        tokenizer,
        prompts,
        [lowercase_reward, uppercase_reward],
        simplex_grid(2, 3),
        num_samples=2,
        max_new_tokens=5,
    )
    assert len(front.samples) == 3 * 2 * 2
    assert [(s["weights"], s["prompt"], s["sample"]) for s in front.samples[:4]] == [
        ([1.0, 0.0], "Describe: a\n", 0),
        ([1.0, 0.0], "Describe: a\n", 1),
        ([1.0, 0.0], "Describe: b\n", 0),
        ([1.0, 0.0], "Describe: b\n", 1),
    ]
    for sample in front.samples:  # each reward recomputed from the recorded text
        assert sample["rewards"]["lower"] == pytest.approx(lowercase_reward([sample["completion"]])[0])
        assert sample["rewards"]["upper"] == pytest.approx(uppercase_reward([sample["completion"]])[0])
    for k, result in enumerate(front.results):  # the summary is the mean of its samples
        rows = front.samples[4 * k : 4 * k + 4]
        assert result.rewards["lower"] == pytest.approx(sum(s["rewards"]["lower"] for s in rows) / 4, abs=1e-6)
        assert result.kl == pytest.approx(sum(s["kl"] for s in rows) / 4, abs=1e-5)
    json_path, _ = front.save(str(tmp_path))
    assert "samples" not in json.loads(open(json_path).read())  # front.json stays a summary
    path = front.save_samples(str(tmp_path / "samples.jsonl"))
    assert [json.loads(line) for line in open(path)] == front.samples


@pytest.fixture
def saved_chat_steerable(tmp_path, saved_base_model):
    """A steerable model whose tokenizer has a chat template, trained (as saved) with `chat_template_kwargs`."""
    torch.manual_seed(0)
    steer = SteerableModel.from_base_model(
        demo.make_tiny_llama(seed=0),
        ["lower", "upper"],
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
        tokenizer=bos_tokenizer(),
    )
    steer.conditioning_config.chat_template_kwargs = {"style": "brief"}
    steer.model.peft_config["default"].base_model_name_or_path = saved_base_model
    steer.save_pretrained(tmp_path / "chat-clp")
    return str(tmp_path / "chat-clp")


def test_cli_evaluate_takes_conversations_and_sampling_options_and_writes_the_completions(
    saved_chat_steerable, tmp_path, capsys, monkeypatch
):
    import trl_clp.evaluation

    calls = []
    real = trl_clp.evaluation.evaluate_front

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(trl_clp.evaluation, "evaluate_front", spy)
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": conversation}) for conversation in CONVERSATIONS))
    out = tmp_path / "eval"
    argv = ["evaluate", saved_chat_steerable, "--prompts", str(prompts), "--reward_funcs", "lowercase", "uppercase"]
    argv += ["--grid_points", "2", "--samples_per_prompt", "1", "--max_new_tokens", "3", "--output_dir", str(out)]
    main(argv + ["--temperature", "0.7", "--top_p", "0.9", "--top_k", "5", "--batch_size", "3"])
    assert {key: calls[0][key] for key in ("temperature", "top_p", "top_k", "batch_size")} == {
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 5,
        "batch_size": 3,
    }
    samples = [json.loads(line) for line in (out / "evaluation_samples.jsonl").read_text().splitlines()]
    assert [s["prompt"] for s in samples] == CONVERSATIONS + CONVERSATIONS
    assert all(set(s) == {"prompt", "weights", "sample", "completion", "rewards", "kl", "value"} for s in samples)
    assert "evaluation_samples.jsonl" in capsys.readouterr().out

    code, _ = run_cli(argv + ["--top_p", "0"], capsys)
    assert code == "trl-clp evaluate: error: --top_p must be in (0, 1], got 0.0."


def test_cli_evaluate_refuses_a_malformed_prompts_file_before_loading_the_model(
    saved_chat_steerable, tmp_path, capsys, monkeypatch
):
    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(SteerableModel, "from_pretrained", no_loading)
    bad = tmp_path / "bad.jsonl"
    for rows, expected in (
        (
            [{"prompt": CONVERSATIONS[0]}, {"prompt": "plain text"}],
            "Prompt 2 is 'plain text': each prompt must be a conversation",
        ),
        (
            [{"prompt": [{"role": "user", "text": "hi"}]}],
            "Prompt 1 is [{'role': 'user', 'text': 'hi'}]: each prompt must be a string, or a conversation",
        ),
        ([{"prompt": 3}], "Prompt 1 is 3: each prompt must be a string, or a conversation"),
    ):
        bad.write_text("\n".join(json.dumps(row) for row in rows))
        code, _ = run_cli(
            ["evaluate", saved_chat_steerable, "--prompts", str(bad), "--reward_funcs", "lowercase", "uppercase"],
            capsys,
        )
        assert code.startswith(f"trl-clp evaluate: error: {bad}: {expected}"), code
