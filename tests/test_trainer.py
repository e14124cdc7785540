"""MultiObjectiveTrainer: construction errors, per-row rewards and advantages, buffering, resume, drift."""

import functools
import math

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from trl import RLOOConfig, RLOOTrainer

from trl_clp import MultiObjectiveConfig, MultiObjectiveTrainer, demo
from trl_clp.conditioning.config import CLP_CONFIG_NAME
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import TARGETS, lower, tiny_config, tiny_config_values, upper


def make_trainer(tmp_path, tokenizer, dataset, reward_funcs=(lower, upper), peft_config=None, model=None, **overrides):
    return MultiObjectiveTrainer(
        model=model if model is not None else demo.make_tiny_llama(seed=0),
        reward_funcs=list(reward_funcs),
        args=tiny_config(tmp_path, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=peft_config or LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )


def record_generations(trainer):
    """Keep a copy of every output of `_generate_and_score_completions`."""
    records = []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        records.append({k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in output.items()})
        return output

    trainer._generate_and_score_completions = recording
    return records


# ---------------------------------------------------------------------------------------------- construction errors


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(reward_weights=[1.0, 1.0]), "reward_weights"),
        (dict(num_generations=1), "num_generations"),
        (dict(use_vllm=True), "vLLM"),
        (dict(use_transformers_continuous_batching=True), "Continuous batching"),
        (dict(conditioning="lora"), "conditioning"),
        (dict(weight_distribution="fixed"), "fixed_weights"),
        (dict(weight_distribution="fixed", fixed_weights=["0.5,0.6"]), "simplex"),
        (dict(weight_distribution="fixed", fixed_weights=["nan,1"]), "simplex"),
        (dict(weight_distribution="fixed", fixed_weights=["1,0", "1,0,0"]), "different lengths"),
        (dict(fixed_weights=["1,0"]), "only used with"),
        (dict(objective_names=["a", "a"]), "duplicates"),
        (dict(kl_weights=[0.0, 0.1]), "> 0"),
        (dict(kl_weights=[0.1], kl_weight_range=[0.1, 1.0]), "at most one"),
        (dict(conditioning="prompt", kl_weights=[0.1]), "prompting baseline"),
        (dict(prompt_template="no placeholder"), "{weights}"),
        (dict(dirichlet_concentration=0.0), "dirichlet_concentration"),
        (dict(one_hot_fraction=1.5), "must be in \\[0, 1\\]"),
        (dict(one_hot_final_probability=-0.1), "must be in \\[0, 1\\]"),
        (dict(one_hot_fraction=0.6, one_hot_anneal_fraction=0.5), "shorten one of them"),
        (dict(one_hot_anneal_fraction=0.5), "set `one_hot_fraction` > 0"),
        (dict(one_hot_fraction=0.2, weight_distribution="one_hot"), "choose 'dirichlet', 'uniform' or 'fixed'"),
        (dict(one_hot_fraction=0.2, one_hot_final_probability=1.0), "never spread"),
        (dict(generation_kwargs={"num_return_sequences": 2}), "Set `num_generations`"),
    ],
)
def test_config_errors_name_the_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(tmp_path, **overrides)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(overrides=dict(objective_names=["a", "b", "c"])), "one name per reward function"),
        (dict(overrides=dict(weight_distribution="fixed", fixed_weights=["0.2,0.3,0.5"])), "one weight per reward"),
        (dict(reward_funcs=(lower, lower)), "objective_names"),
        (dict(reward_funcs=(lower,)), "at least 2"),
        (dict(peft_config=LoraConfig(r=4, target_modules=TARGETS, use_dora=True)), "use_dora"),
        (dict(peft_config=LoraConfig(r=4, target_modules=TARGETS, use_rslora=True)), "use_rslora"),
        (dict(peft_config=LoraConfig(r=4, target_modules=TARGETS, init_lora_weights="pissa")), "init_lora_weights"),
        (dict(overrides=dict(conditioning="attn", conditioned_target_modules=["c_attn"])), "No LoRA layer matches"),
    ],
)
def test_trainer_construction_errors_name_the_fix(tmp_path, tokenizer, prompts_dataset, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_trainer(
            tmp_path,
            tokenizer,
            prompts_dataset,
            reward_funcs=kwargs.get("reward_funcs", (lower, upper)),
            peft_config=kwargs.get("peft_config"),
            **kwargs.get("overrides", {}),
        )


def test_dataset_without_prompt_column_is_rejected(tmp_path, tokenizer):
    dataset = Dataset.from_dict({"text": ["a", "b"]})
    with pytest.raises(ValueError, match="rename_column"):
        make_trainer(tmp_path, tokenizer, dataset)


def test_an_empty_training_dataset_is_rejected_at_construction(tmp_path, tokenizer):
    with pytest.raises(ValueError, match="training dataset is empty"):
        make_trainer(tmp_path, tokenizer, Dataset.from_dict({"prompt": []}))


def test_without_args_a_default_config_named_after_the_model_is_built(
    tmp_path, tokenizer, saved_base_model, monkeypatch
):
    import dataclasses

    from trl_clp import trainer as trainer_module

    @dataclasses.dataclass
    class CPUConfig(MultiObjectiveConfig):  # TRL's defaults ask for bf16, which this CPU lacks (so does RLOOTrainer's)
        bf16: bool | None = False

    monkeypatch.setattr(trainer_module.MultiObjectiveTrainer, "config_class", CPUConfig)
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative, as RLOOTrainer's is
    trainer = MultiObjectiveTrainer(
        model=saved_base_model,
        reward_funcs=[lower, upper],
        train_dataset=demo.make_prompt_dataset(8, seed=0),
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    assert type(trainer.args) is CPUConfig
    assert trainer.args.output_dir == "base-CLP"  # RLOOTrainer would name it "base-RLOO"
    assert trainer.args.weight_distribution == "dirichlet" and trainer.objective_names == ["lower", "upper"]


def test_a_peft_model_is_rejected(tmp_path, tokenizer, prompts_dataset):
    from peft import get_peft_model

    model = get_peft_model(demo.make_tiny_llama(), LoraConfig(r=4, target_modules=TARGETS))
    with pytest.raises(ValueError, match="base model"):
        make_trainer(tmp_path, tokenizer, prompts_dataset, model=model)


def wrong_count(completions, **kwargs):
    return [0.0] * (len(completions) - 1)


def returns_nan(completions, **kwargs):
    return [math.nan] * len(completions)


def returns_inf(completions, **kwargs):
    return [math.inf] * len(completions)


def returns_text(completions, **kwargs):
    return ["high"] * len(completions)


async def async_returns_text(completions, **kwargs):
    return ["high"] * len(completions)


@pytest.mark.parametrize(
    "bad, message",
    [
        (wrong_count, "exactly one per completion"),
        (returns_nan, "must be finite"),
        (returns_inf, "must be finite"),
        (returns_text, "return a float"),
        (async_returns_text, "return a float"),
    ],
)
def test_bad_reward_values_fail_at_the_first_step_naming_the_function(
    tmp_path, tokenizer, prompts_dataset, bad, message
):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(lower, bad), max_steps=1)
    with pytest.raises((ValueError, TypeError), match=message) as error:
        trainer.train()
    assert bad.__name__ in str(error.value)


def test_none_rewards_mean_not_applicable(tmp_path, tokenizer, prompts_dataset):
    import numpy as np

    def sometimes(completions, **kwargs):  # None, numpy and bool values are all valid
        return [None if i % 3 == 0 else np.float32(1.0) if i % 3 == 1 else True for i in range(len(completions))]

    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(lower, sometimes), max_steps=1)
    records = record_generations(trainer)
    trainer.train()
    assert torch.isfinite(records[0]["advantages"]).all()


def test_numpy_array_rewards_are_accepted_as_trl_accepts_them(tmp_path, tokenizer, prompts_dataset):
    import numpy as np

    def numpy_upper(completions, **kwargs):
        return np.asarray(uppercase_reward(completions), dtype=np.float32)

    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(lower, numpy_upper), max_steps=1)
    trainer.train()
    assert trainer.state.global_step == 1 and "rewards/numpy_upper/mean" in trainer.state.log_history[0]


def save_tiny_reward_model(path, tokenizer, nan: bool = False) -> str:
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=259,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    if nan:
        torch.nn.init.constant_(model.score.weight, math.nan)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_a_nan_from_a_reward_model_is_an_error_naming_it(tmp_path, tokenizer, prompts_dataset):
    path = save_tiny_reward_model(tmp_path / "broken-rm", tokenizer, nan=True)
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(lower, path), max_steps=1)
    with pytest.raises(ValueError, match=r"Reward model 'broken-rm' returned non-finite rewards \(nan\) for 8 of 8"):
        trainer.train()


def test_an_overflowing_reward_model_is_an_error_naming_it(tmp_path, tokenizer, prompts_dataset):
    """An fp16 overflow gives +inf for some completions: it must stop training, not become the ideal point."""
    from transformers import AutoModelForSequenceClassification

    reward_model = AutoModelForSequenceClassification.from_pretrained(
        save_tiny_reward_model(tmp_path / "overflowing-rm", tokenizer)
    )

    def overflow_every_other_row(module, args, output):
        output.logits[::2] = math.inf  # what an fp16 head gives past 65504
        return output

    reward_model.register_forward_hook(overflow_every_other_row)
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        reward_funcs=(lower, reward_model),
        max_steps=1,
        scalarization="tchebycheff",
    )
    with pytest.raises(
        ValueError, match=r"Reward model 'overflowing-rm' returned non-finite rewards \(inf\) for 4 of 8"
    ):
        trainer.train()
    assert trainer.ideal_point.maxima.isneginf().all()  # stopped before the inf reached the ideal point


# ---------------------------------------------------------------------------------------------- training behaviour


def test_rows_keep_their_group_weighting_through_buffering(tmp_path, tokenizer, prompts_dataset):
    # 2 steps share one generation of 16 rows = 4 groups; TRL shuffles the rows and splits them across the steps.
    trainer = make_trainer(
        tmp_path, tokenizer, prompts_dataset, steps_per_generation=2, num_iterations=2, max_steps=4, beta=0.05
    )
    seen = []
    original = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        seen.append(
            (inputs["prompt_ids"].clone(), inputs["conditioning_vectors"].clone(), inputs["advantages"].clone())
        )
        return original(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    assert len(seen) == 4  # one generation of 16 rows, 2 slices of 8, each used for 2 iterations
    by_prompt = {}
    for prompt_ids, weights, _ in seen:
        for ids, w in zip(prompt_ids, weights, strict=True):
            by_prompt.setdefault(tuple(ids.tolist()), set()).add(tuple(round(v, 6) for v in w.tolist()))
    assert all(len(ws) == 1 for ws in by_prompt.values()), "a prompt group was split across weightings"
    assert len({next(iter(ws)) for ws in by_prompt.values()}) > 1, "every group got the same weighting"


def recording_rewards(reward_funcs):
    """Wrap reward functions so that every batch of rewards they return is kept: `calls[name]` is a list of lists."""
    calls = {}

    def wrap(func):
        def recorded(completions, **kwargs):
            values = func(completions, **kwargs)
            calls.setdefault(func.__name__, []).append(list(values))
            return values

        recorded.__name__ = func.__name__
        return recorded

    return [wrap(func) for func in reward_funcs], calls


def record_generations_and_kl(trainer):
    """Like `record_generations`, plus each row's KL `Σ_t log π(y_t | w) − log π_ref(y_t)`, computed right after the
    generation (before the update) with plain forward passes, independently of the trainer's scoring path."""
    records = []
    original = trainer._generate_and_score_completions

    def recording(inputs):
        output = original(inputs)
        ids = torch.cat([output["prompt_ids"], output["completion_ids"]], dim=1)
        mask = torch.cat([output["prompt_mask"], output["completion_mask"]], dim=1)
        completion = output["completion_ids"]

        def completion_logps():
            logits = trainer.model(input_ids=ids, attention_mask=mask).logits[:, -completion.size(1) - 1 : -1]
            return torch.log_softmax(logits.float(), dim=-1).gather(-1, completion.unsqueeze(-1)).squeeze(-1)

        with torch.no_grad():
            trainer.conditioner.set_conditioning_vectors(output["conditioning_vectors"])
            try:
                policy = completion_logps()
            finally:
                trainer.conditioner.clear()
            with trainer.model.disable_adapter():
                reference = completion_logps()
        record = {k: v.detach().clone() if isinstance(v, torch.Tensor) else v for k, v in output.items()}
        record["kl"] = ((policy - reference) * output["completion_mask"]).sum(1)  # (N,)
        records.append(record)
        return output

    trainer._generate_and_score_completions = recording
    return records


def expected_advantages(rewards, weights, kl, alpha, num_generations):
    """`w·R − α·KL`, then each row minus the mean of the other rows of its group (RLOO), written out by hand."""
    scalar = (torch.tensor(rewards, dtype=torch.float32) * weights).sum(1) - alpha * kl  # (N,)
    groups = scalar.view(-1, num_generations)
    others = (groups.sum(1, keepdim=True) - groups) / (num_generations - 1)
    return (groups - others).view(-1)


@pytest.mark.parametrize(
    "weighting",
    [dict(), dict(weight_distribution="fixed", fixed_weights=["0.8,0.2"])],
    ids=["dirichlet-per-group", "fixed-non-uniform"],
)
def test_advantages_equal_a_recomputation_of_w_dot_r_minus_alpha_kl(tmp_path, tokenizer, prompts_dataset, weighting):
    alpha = 0.3
    reward_funcs, calls = recording_rewards((lower, upper))
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        reward_funcs=reward_funcs,
        max_steps=2,
        beta=alpha,
        per_device_train_batch_size=16,
        **weighting,
    )
    records = record_generations_and_kl(trainer)
    trainer.train()
    assert len(records) == 2
    for index, record in enumerate(records):
        weights = record["conditioning_vectors"]  # (16, 2)
        groups = weights.view(-1, 4, 2)
        assert (groups == groups[:, :1]).all()  # one weighting per prompt group
        if weighting:
            torch.testing.assert_close(weights, torch.tensor([[0.8, 0.2]]).expand(16, 2))
        else:
            assert len({tuple(g[0].tolist()) for g in groups}) == 4  # the four groups have different weightings
            assert (weights - 0.5).abs().max() > 0.1  # non-uniform
        assert record["kl"].abs().max() > 1e-3 or index == 0  # after the first update the KL term is exercised
        rewards = list(zip(calls["lower"][index], calls["upper"][index], strict=True))  # (16, 2)
        expected = expected_advantages(rewards, weights, record["kl"], alpha, num_generations=4)
        torch.testing.assert_close(record["advantages"], expected, atol=1e-4, rtol=1e-4)
    # A wrong scalarisation would show: the unweighted and the flipped weightings give other advantages.
    last = records[-1]
    rewards = list(zip(calls["lower"][-1], calls["upper"][-1], strict=True))
    for wrong in (torch.ones_like(last["conditioning_vectors"]), last["conditioning_vectors"].flip(1)):
        wrong_advantages = expected_advantages(rewards, wrong, last["kl"], alpha, num_generations=4)
        assert not torch.allclose(last["advantages"], wrong_advantages, atol=1e-3)


def test_logs_weights_and_reward_by_weight(tmp_path, tokenizer, prompts_dataset):
    alpha = 0.3
    reward_funcs, calls = recording_rewards((lower, upper))
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        reward_funcs=reward_funcs,
        max_steps=2,
        beta=alpha,
        per_device_train_batch_size=32,
        weight_distribution="one_hot",
    )
    records = record_generations_and_kl(trainer)
    trainer.train()
    logged = trainer.state.log_history[1]  # the second step: the adapter has moved, so the KL is not zero
    record = records[1]
    weights = record["conditioning_vectors"]  # (32, 2), one-hot per group of 4
    rewards = torch.tensor(list(zip(calls["lower"][1], calls["upper"][1], strict=True)))  # (32, 2)
    assert {tuple(w) for w in weights.tolist()} == {(1.0, 0.0), (0.0, 1.0)}  # both corners drawn
    # The steerability statistics are fitted on the window's pooled rows: both steps' 64 (< steerability_window).
    pooled_weights = torch.cat([records[0]["conditioning_vectors"], weights])  # (64, 2)
    pooled_rewards = torch.cat([torch.tensor(list(zip(calls["lower"][0], calls["upper"][0], strict=True))), rewards])
    approx = functools.partial(pytest.approx, rel=1e-4, abs=1e-6)
    for i, name in enumerate(("lower", "upper")):
        w, r = weights[:, i], rewards[:, i]
        assert logged[f"weights/{name}/mean"] == approx(w.mean().item())
        assert logged[f"rewards/{name}/mean"] == approx(r.mean().item())
        w, r = pooled_weights[:, i], pooled_rewards[:, i]
        assert logged[f"rewards/{name}/w_high"] == approx(r[w == 1].mean().item())
        assert logged[f"rewards/{name}/w_low"] == approx(r[w == 0].mean().item())
        mid = logged[f"rewards/{name}/w_mid"]  # no weight in [1/3, 2/3) with one-hot draws: NaN, logged as None
        assert mid is None or math.isnan(mid)
        # With weights in {0, 1}, the least-squares slope is the difference of the two means.
        assert logged[f"rewards/{name}/slope_vs_weight"] == approx((r[w == 1].mean() - r[w == 0].mean()).item())
    weighted = (weights * rewards).sum(1)  # (32,) w·R, before the KL penalty
    assert logged["reward"] == approx(weighted.mean().item())
    assert logged["reward_std"] == approx(weighted.std().item())
    mask = record["completion_mask"]
    assert logged["kl"] == pytest.approx(record["kl"].sum().item() / mask.sum().item(), rel=1e-3, abs=1e-5)
    assert logged["kl"] > 0
    final = (weighted - alpha * record["kl"]).view(-1, 4)
    zero_std = torch.isclose(final.std(1), torch.zeros(8)).float().mean().item()
    assert logged["frac_reward_zero_std"] == approx(zero_std)


def test_prompt_variant_writes_weights_into_generation_but_rewards_see_the_original(
    tmp_path, tokenizer, prompts_dataset
):
    seen_prompts = []

    def spy(prompts, completions, **kwargs):
        seen_prompts.extend(prompts)
        return [0.0] * len(completions)

    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(lower, spy), conditioning="prompt")
    records = record_generations(trainer)
    trainer.train()
    assert seen_prompts and all(p.startswith("Describe:") for p in seen_prompts)
    generated_prompt = tokenizer.decode(records[0]["prompt_ids"][0], skip_special_tokens=True)
    assert generated_prompt.startswith("[weights: lower=")


def test_every_evaluation_scores_the_same_weightings(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=1)
    trainer.eval_dataset = prompts_dataset.select(range(4))  # 16 rows: two eval batches of 2 groups
    records = record_generations(trainer)
    first = trainer.evaluate()
    trainer.train()
    second = trainer.evaluate()
    assert len(records) == 2 + 1 + 2  # two eval batches, one training generation, two eval batches
    weights_first = torch.cat([records[0]["conditioning_vectors"], records[1]["conditioning_vectors"]])
    weights_second = torch.cat([records[3]["conditioning_vectors"], records[4]["conditioning_vectors"]])
    assert len({tuple(w.tolist()) for w in weights_first}) == 4  # four groups, four different weightings
    torch.testing.assert_close(weights_second, weights_first, rtol=0, atol=0)
    assert "eval_reward" in first and "eval_reward" in second


@pytest.mark.parametrize("conditioning", ["full", "prompt"])
def test_beam_search_generation_keeps_each_rows_weighting(tmp_path, tokenizer, prompts_dataset, conditioning):
    # Beam search runs each row as `num_beams` rows; a conditioner seeing 16 rows for 8 weightings would raise.
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        max_steps=1,
        conditioning=conditioning,
        generation_kwargs={"num_beams": 2, "do_sample": False},
        learning_rate=0.0,
    )
    torch.manual_seed(0)
    with torch.no_grad():  # non-zero blocks, so that the weighting changes the completions
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    records = record_generations(trainer)
    trainer.train()
    assert trainer.state.global_step == 1 and records[0]["completion_ids"].size(0) == 8
    if conditioning == "prompt":
        return
    # Each beam-searched completion is the one its row gives alone under its own weighting.
    steer_model = trainer.accelerator.unwrap_model(trainer.model)
    steer_model.eval()
    prompt_ids, prompt_mask = records[0]["prompt_ids"], records[0]["prompt_mask"]

    def beam_search_alone(row, weighting):
        with torch.no_grad(), trainer.conditioner.condition(weighting.view(1, -1).repeat(2, 1)):
            alone = steer_model.generate(
                input_ids=prompt_ids[row : row + 1],
                attention_mask=prompt_mask[row : row + 1],
                generation_config=trainer.generation_config,
            )
        return alone[0, prompt_ids.size(1) :][: int(records[0]["completion_mask"][row].sum())].tolist()

    for row in (0, 4):
        weighting = records[0]["conditioning_vectors"][row]
        expected = records[0]["completion_ids"][row, : int(records[0]["completion_mask"][row].sum())].tolist()
        assert beam_search_alone(row, weighting) == expected
        assert beam_search_alone(row, weighting.flip(0)) != expected  # the weighting matters on these rows


def test_gradient_checkpointing_keeps_per_row_gradients(tmp_path, tokenizer, prompts_dataset):
    params = {}
    for checkpointing in (False, True):
        trainer = make_trainer(
            tmp_path / str(checkpointing),
            tokenizer,
            prompts_dataset,
            max_steps=1,
            gradient_checkpointing=checkpointing,
        )
        trainer.train()
        params[checkpointing] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    for name, value in params[False].items():
        torch.testing.assert_close(params[True][name], value, atol=1e-6, rtol=1e-5, msg=name)


def load_like_deepspeed(trainer):
    """Make `trainer` load checkpoints the way transformers does under DeepSpeed: through a loader of its own
    (`deepspeed_load_checkpoint`), never through the trainer's `_load_from_checkpoint` override."""
    from transformers import Trainer

    trainer._load_from_checkpoint = functools.partial(Trainer._load_from_checkpoint, trainer)


@pytest.mark.parametrize("loader", ["default", "deepspeed"])
def test_resume_continues_the_same_weight_stream(tmp_path, tokenizer, prompts_dataset, loader):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, beta=0.05, reward_normalization="running")
    full = make_trainer(tmp_path / "full", tokenizer, prompts_dataset, **common)
    full_records = record_generations(full)
    full.train()

    resumed = make_trainer(tmp_path / "full", tokenizer, prompts_dataset, **common)
    if loader == "deepspeed":
        load_like_deepspeed(resumed)
    resumed_records = record_generations(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-2"))
    assert len(resumed_records) == 2
    for expected, got in zip(full_records[2:], resumed_records, strict=True):
        torch.testing.assert_close(got["conditioning_vectors"], expected["conditioning_vectors"])
        torch.testing.assert_close(got["advantages"], expected["advantages"])  # same running statistics
    assert resumed.reward_moments.count.sum() == full.reward_moments.count.sum()


def scheduled_weightings(seed: int, micro_step: int, num_groups: int, concentration: float, p: float) -> torch.Tensor:
    """`(G, 2)` the weightings of a training draw under a weighting schedule, recomputed from the documented stream:
    Dirichlet rows from `(seed, 0, micro_step)`, each replaced with probability p by a corner from key 2."""
    import numpy as np

    weights = np.random.default_rng([seed, 0, micro_step]).dirichlet([concentration] * 2, size=num_groups)
    corner_rng = np.random.default_rng([seed, 0, micro_step, 2])
    is_corner, corner = corner_rng.random(num_groups) < p, corner_rng.integers(2, size=num_groups)
    weights[is_corner] = np.eye(2)[corner[is_corner]]
    return torch.as_tensor(weights, dtype=torch.float32)


def test_weighting_schedule_draws_corners_first_then_spreads_and_resumes_exactly(tmp_path, tokenizer, prompts_dataset):
    schedule = dict(
        max_steps=4,
        num_generations=2,
        per_device_train_batch_size=16,  # 8 prompt groups per step
        dirichlet_concentration=0.5,
        one_hot_fraction=0.25,
        one_hot_anneal_fraction=0.5,
        one_hot_final_probability=0.25,
        save_strategy="steps",
        save_steps=2,
    )
    full = make_trainer(tmp_path, tokenizer, prompts_dataset, **schedule)
    full_records = record_generations(full)
    full.train()
    # 4 steps: corners at step 0 (t < .25); p falls from 1 at t = .25 to .25 at t = .75, and stays there.
    probabilities = [1.0, 1.0, 0.625, 0.25]
    logged = [h["weights/one_hot_probability"] for h in full.state.log_history if "weights/one_hot_probability" in h]
    assert logged == pytest.approx(probabilities)
    for step, (record, p) in enumerate(zip(full_records, probabilities, strict=True)):
        expected = scheduled_weightings(0, step, 8, 0.5, p).repeat_interleave(2, dim=0)  # (16, 2)
        torch.testing.assert_close(record["conditioning_vectors"], expected)
    assert all((r["conditioning_vectors"].max(-1).values == 1).all() for r in full_records[:2])
    assert (full_records[3]["conditioning_vectors"].max(-1).values < 1).any()

    resumed = make_trainer(tmp_path, tokenizer, prompts_dataset, **schedule)
    resumed_records = record_generations(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    for expected, got in zip(full_records[2:], resumed_records, strict=True):
        torch.testing.assert_close(got["conditioning_vectors"], expected["conditioning_vectors"])


@pytest.mark.parametrize("loader", ["default", "deepspeed"])
def test_resume_from_a_checkpoint_with_other_objectives_is_rejected(tmp_path, tokenizer, prompts_dataset, loader):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=1, save_strategy="steps", save_steps=1)
    trainer.train()
    checkpoint = tmp_path / "out" / "checkpoint-1"
    assert (checkpoint / CLP_CONFIG_NAME).is_file()
    other = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=2, objective_names=["x", "y"])
    if loader == "deepspeed":
        load_like_deepspeed(other)
    with pytest.raises(ValueError, match="same reward functions"):
        other.train(resume_from_checkpoint=True)  # resolved to checkpoint-1, as transformers resolves it
    assert other.state.global_step == 0


# ---------------------------------------------------------------------------------------------- drift detector


def test_constant_uniform_weighting_reproduces_upstream_rloo(tmp_path, tokenizer, prompts_dataset):
    """With w fixed at (1/2, 1/2), every block is scaled by m·w_i = 1: the CLP adapter is exactly the plain LoRA of
    rank m·r, so the trainer must reproduce RLOOTrainer with reward_weights=(1/2, 1/2) step for step."""
    common = dict(max_steps=3, beta=0.2, learning_rate=5e-2)
    clp = make_trainer(
        tmp_path / "clp", tokenizer, prompts_dataset, weight_distribution="fixed", fixed_weights=["0.5,0.5"], **common
    )
    clp_records = record_generations(clp)
    clp.train()

    rloo_args = RLOOConfig(**tiny_config_values(tmp_path / "rloo", **common), reward_weights=[0.5, 0.5])
    rloo = RLOOTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=rloo_args,
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS),
    )
    rloo_records = record_generations(rloo)
    rloo.train()

    assert len(clp_records) == len(rloo_records) == 3
    for ours, theirs in zip(clp_records, rloo_records, strict=True):
        assert torch.equal(ours["completion_ids"], theirs["completion_ids"])
        torch.testing.assert_close(ours["advantages"], theirs["advantages"], atol=1e-5, rtol=1e-5)
    kl = [entry["kl"] for entry in rloo.state.log_history if "kl" in entry]
    assert kl[-1] != 0.0  # the KL term was exercised, not only the rewards


def test_logit_variant_trains_the_output_layer_blocks_through_the_unfused_head(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, conditioning="logit", max_steps=2, beta=0.1)
    lm_head = trainer.model.base_model.model.lm_head
    torch.manual_seed(0)
    with torch.no_grad():  # a trained output-layer LoRA: at init (B = 0) it would have no effect to compare
        lm_head.lora_B["default"].weight.normal_(0, 0.2)
    before = lm_head.lora_B["default"].weight.detach().clone()
    input_ids = torch.randint(3, 259, (1, 12)).repeat(4, 1)  # one sequence, so that rows differ by weighting only
    mask = torch.ones_like(input_ids)
    weights = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.3, 0.7], [0.5, 0.5]])  # one weighting per row
    fused = functools.partial(RLOOTrainer._get_per_token_logps_and_entropies, trainer, trainer.model)
    with torch.no_grad():
        trainer.conditioner.set_conditioning_vectors(weights)
        try:
            unfused, _, _ = trainer._unfused_logps_and_entropies(trainer.model, input_ids, mask, 5)
            fused_skipping_the_lora, _, _ = fused(input_ids, mask, 5)
        finally:
            trainer.conditioner.clear()
        # Reference: TRL's fused head on an output layer whose weight is the conditioned layer's effective weight
        # for the row's weighting (read off by feeding it the identity), with its LoRA switched off.
        base, lora_b = lm_head.base_layer.weight, lm_head.lora_B["default"].weight
        saved_base, saved_b = base.clone(), lora_b.clone()
        reference = []
        for row in range(4):
            trainer.conditioner.set_conditioning_vectors(weights[row : row + 1])
            try:
                effective = lm_head(torch.eye(lm_head.in_features).unsqueeze(0))[0].T  # (V, H)
                base.copy_(effective)
                lora_b.zero_()
                reference.append(fused(input_ids[row : row + 1], mask[row : row + 1], 5)[0])
            finally:
                base.copy_(saved_base)
                lora_b.copy_(saved_b)
                trainer.conditioner.clear()
    torch.testing.assert_close(unfused, torch.cat(reference), atol=1e-5, rtol=1e-5)
    assert (unfused - fused_skipping_the_lora).abs().max() > 1e-2  # TRL's fused head alone would miss the LoRA
    assert (unfused[0] - unfused[1]).abs().max() > 1e-2  # and each row's weighting changes its log-probabilities
    trainer.train()
    assert not torch.equal(lm_head.lora_B["default"].weight, before)
    trainer.save_model()
    saved = (tmp_path / "out" / "clp_config.json").read_text()
    assert "lm_head" in saved


def test_logit_variant_saves_the_state_dict_transformers_gathered(tmp_path, tokenizer, prompts_dataset):
    """Under ZeRO-3 the live parameters are partitioned and `save_model` passes `_save` the gathered state dict: that
    one must be written, once, without the frozen output layer."""
    from safetensors.torch import load_file

    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, conditioning="logit")
    live = trainer.accelerator.unwrap_model(trainer.model).state_dict()
    torch.manual_seed(0)
    gathered = {key: torch.randn_like(value) if "lora_" in key else value for key, value in live.items()}
    trainer._save(str(tmp_path / "saved"), state_dict=gathered)
    saved = load_file(str(tmp_path / "saved" / "adapter_model.safetensors"))
    head = "base_model.model.lm_head"
    assert not any(".base_layer." in key for key in saved)  # the frozen output layer is reloaded from the base model
    exact = functools.partial(torch.testing.assert_close, rtol=0, atol=0)
    exact(saved[f"{head}.lora_B.weight"], gathered[f"{head}.lora_B.default.weight"])
    assert not torch.equal(saved[f"{head}.lora_B.weight"], live[f"{head}.lora_B.default.weight"])
    q_proj = "base_model.model.model.layers.0.self_attn.q_proj"
    exact(saved[f"{q_proj}.lora_A.weight"], gathered[f"{q_proj}.lora_A.default.weight"])


# ---------------------------------------------------------------------------------------------- other reward kinds


async def async_lower(completions, **kwargs):
    return lowercase_reward(completions)


def test_reward_models_and_async_callables_are_objectives(tmp_path, tokenizer, prompts_dataset):
    path = save_tiny_reward_model(tmp_path / "tiny-reward-model", tokenizer)
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, reward_funcs=(async_lower, path), max_steps=1)
    assert trainer.objective_names == ["async_lower", "tiny-reward-model"]
    records = record_generations(trainer)
    trainer.train()
    logged = trainer.state.log_history[0]
    assert logged["weights/async_lower/mean"] == pytest.approx(
        records[0]["conditioning_vectors"][:, 0].mean().item(), rel=1e-5
    )
    assert math.isfinite(logged["rewards/tiny-reward-model/mean"]) and logged["rewards/tiny-reward-model/std"] > 0
    assert torch.isfinite(records[0]["advantages"]).all() and records[0]["advantages"].abs().sum() > 0


# ---------------------------------------------------------------------------------------------- KL-weight conditioning


def test_kl_weight_conditioning_adds_a_block_and_encodes_alpha(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, kl_weights=[0.05, 0.5], max_steps=2)
    records = record_generations(trainer)
    trainer.train()
    assert trainer.conditioner.num_blocks == 3
    q_proj = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    assert q_proj.r["default"] == 3 * 4
    vectors = torch.cat([r["conditioning_vectors"] for r in records])  # (rows, 3)
    torch.testing.assert_close(vectors.sum(-1), torch.ones(len(vectors)))
    # α = 0.05 (the smallest) puts no weight on the KL block, α = 0.5 puts 1 − 0.05/0.5 = 0.9.
    assert {round(v, 5) for v in vectors[:, 2].tolist()} == {0.0, 0.9}
    alphas = 0.05 / (1 - records[0]["conditioning_vectors"][:, 2])  # (8,) each row's α, decoded from its KL block
    assert trainer.state.log_history[0]["kl_weight/mean"] == pytest.approx(alphas.mean().item(), rel=1e-5)
    trainer.save_model()
    from trl_clp import SteerableModel

    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    assert steer.conditioning_config.min_kl_weight == 0.05
    inputs = tokenizer(["Describe: a\n", "Describe: b\n"], return_tensors="pt", padding=True)
    out = steer.generate(
        **inputs,
        weights=torch.tensor([0.5, 0.5]),
        kl_weight=torch.tensor([0.05, 0.5]),
        max_new_tokens=3,
        do_sample=False,
        pad_token_id=0,
    )
    assert out.shape[0] == 2
    with pytest.raises(ValueError, match="smallest KL weight"):
        steer.conditioning_vector(torch.tensor([0.5, 0.5]), kl_weight=0.01)


def test_bf16_training_runs_with_per_row_conditioning(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, bf16=True, use_cpu=True, max_steps=1, beta=0.1)
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    moved = [n for n, p in trainer.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert moved
    assert all(math.isfinite(v) for k, v in trainer.state.log_history[0].items() if isinstance(v, float))


def test_prompt_variant_model_steers_through_its_prompt(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, conditioning="prompt", max_steps=1)
    trainer.train()
    trainer.save_model()
    from trl_clp import SteerableModel

    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    assert steer.conditioner.conditioned_module_names == []
    inputs = tokenizer(["Describe: a\n", "Describe: b\n"], return_tensors="pt", padding=True)
    out = steer.generate(
        **inputs, weights=torch.tensor([[1.0, 0.0], [0.0, 1.0]]), max_new_tokens=2, do_sample=False, pad_token_id=0
    )
    prefix = tokenizer.decode(out[0], skip_special_tokens=True)
    assert prefix.startswith("[weights: lower=1.00 upper=0.00] Describe: a")
    with pytest.raises(ValueError, match="through its prompt"), steer.condition(torch.tensor([1.0, 0.0])):
        pass


# ---------------------------------------------------------------------------------------------- front callback


def test_front_callback_logs_and_saves_the_front_without_changing_training(tmp_path, tokenizer, prompts_dataset):
    from trl_clp.callbacks import FrontEvaluationCallback
    from trl_clp.evaluation import Front

    params = {}
    for with_callback in (False, True):
        trainer = make_trainer(tmp_path / str(with_callback), tokenizer, prompts_dataset, max_steps=4, beta=0.1)
        if with_callback:
            callback = FrontEvaluationCallback(
                trainer, ["Describe: a\n", "Describe: b\n"], [lower, upper], eval_every_steps=2, max_new_tokens=4
            )
            trainer.add_callback(callback)
        trainer.train()
        params[with_callback] = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    for name, value in params[False].items():
        assert torch.equal(params[True][name], value), name  # the evaluation's sampling left training's RNG alone
    assert sorted(callback.fronts) == [2, 4]
    logged = [entry for entry in trainer.state.log_history if "front/hypervolume" in entry]
    assert len(logged) == 2 and "front/lower/range" in logged[0]
    fronts_dir = tmp_path / "True" / "out" / "fronts"
    assert Front.load(str(fronts_dir / "step-4.json")).objective_names == ["lower", "upper"]
    assert (fronts_dir / "reference_point.json").is_file()


def test_front_callback_samples_as_the_trainer_samples(tmp_path, tokenizer, prompts_dataset, monkeypatch):
    import trl_clp.callbacks
    from trl_clp.callbacks import FrontEvaluationCallback

    calls = []
    evaluate = trl_clp.callbacks.evaluate_front
    monkeypatch.setattr(trl_clp.callbacks, "evaluate_front", lambda *a, **kw: calls.append(kw) or evaluate(*a, **kw))
    sampling = dict(temperature=0.7, top_p=0.9, top_k=5, min_p=0.05, repetition_penalty=1.1)
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=1, **sampling)
    trainer.add_callback(FrontEvaluationCallback(trainer, ["Describe: a\n"], [lower, upper], eval_every_steps=1))
    given = FrontEvaluationCallback(trainer, ["Describe: a\n"], [lower, upper], eval_every_steps=1, top_k=3)
    trainer.add_callback(given)
    trainer.train()
    assert [{key: kw[key] for key in sampling} for kw in calls] == [sampling, {**sampling, "top_k": 3}]
