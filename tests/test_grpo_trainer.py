"""MultiObjectiveGRPOTrainer: config refusals, drift against GRPOTrainer, advantages by value (multi-α, buffered
steps), every loss_type, one-hot gradients, resume, and the private TRL methods it overrides."""

import inspect

import pytest
import torch
from peft import LoraConfig
from trl import GRPOConfig, GRPOTrainer, RLOOTrainer

from trl_clp import MultiObjectiveGRPOConfig, MultiObjectiveGRPOTrainer, MultiObjectiveTrainer, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import TARGETS, lower, tiny_config_values, upper
from .test_scalarization import record_rewards_and_outputs


def grpo_config(tmp_path, **overrides) -> MultiObjectiveGRPOConfig:
    return MultiObjectiveGRPOConfig(**tiny_config_values(tmp_path, **overrides))


def make_trainer(tmp_path, tokenizer, dataset, reward_funcs=(lower, upper), **overrides):
    return MultiObjectiveGRPOTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=list(reward_funcs),
        args=grpo_config(tmp_path, **overrides),
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )


def trainable(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(reward_weights=[1.0, 1.0]), "reward_weights"),
        (dict(use_vllm=True), "merges the adapter"),
        (dict(use_transformers_continuous_batching=True), "packs rows"),
        (dict(scalarization="tchebycheff", multi_objective_aggregation="normalize_then_sum"), "sum_then_normalize"),
        (dict(multi_objective_aggregation="sum"), "multi_objective_aggregation"),
    ],
)
def test_options_that_cannot_work_per_row_are_refused_at_config_time(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        grpo_config(tmp_path, **overrides)


def test_rloo_args_are_rejected(tmp_path, tokenizer, prompts_dataset):
    from .conftest import tiny_config

    with pytest.raises(TypeError, match="MultiObjectiveGRPOConfig"):
        MultiObjectiveGRPOTrainer(
            demo.make_tiny_llama(),
            [lower, upper],
            args=tiny_config(tmp_path),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
        )


# ---------------------------------------------------------------------------------------------- drift detector


def lower_in_first_row(completions, **kwargs):
    """The lowercase reward of each group's first completion only (groups of 4; None elsewhere): one value per group,
    whose within-group normalisation is NaN."""
    return [reward if i % 4 == 0 else None for i, reward in enumerate(lowercase_reward(completions))]


def upper_in_other_rows(completions, **kwargs):
    """The uppercase reward of each group's other three completions (None in the first)."""
    return [reward if i % 4 else None for i, reward in enumerate(uppercase_reward(completions))]


@pytest.mark.parametrize(
    "aggregation, reward_funcs",
    [
        ("sum_then_normalize", (lower, upper)),
        ("normalize_then_sum", (lower, upper)),
        # Each group's first row has one objective, with one value in the group: TRL keeps the row at reward 0.
        ("normalize_then_sum", (lower_in_first_row, upper_in_other_rows)),
    ],
    ids=["sum_then_normalize", "normalize_then_sum", "normalize_then_sum-single-values"],
)
def test_constant_uniform_weighting_reproduces_upstream_grpo(
    tmp_path, tokenizer, prompts_dataset, aggregation, reward_funcs
):
    """With w fixed at (1/2, 1/2) the CLP adapter is the plain LoRA of rank m·r (every block scaled by m·w_i = 1),
    so the trainer must reproduce GRPOTrainer with reward_weights=(1/2, 1/2): same completions, same advantages."""
    common = dict(max_steps=3, learning_rate=5e-2, multi_objective_aggregation=aggregation)
    clp = make_trainer(
        tmp_path / "clp",
        tokenizer,
        prompts_dataset,
        reward_funcs,
        weight_distribution="fixed",
        fixed_weights=["0.5,0.5"],
        **common,
    )
    clp_records = record_rewards_and_outputs(clp)
    clp.train()
    upstream = GRPOTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=list(reward_funcs),
        args=GRPOConfig(**tiny_config_values(tmp_path / "grpo", **common), reward_weights=[0.5, 0.5]),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=8, lora_alpha=8, target_modules=TARGETS),
    )
    upstream_records = record_rewards_and_outputs(upstream)
    upstream.train()
    assert len(clp_records) == len(upstream_records) == 3
    for ours, theirs in zip(clp_records, upstream_records, strict=True):
        assert torch.equal(ours["completion_ids"], theirs["completion_ids"])
        torch.testing.assert_close(ours["advantages"], theirs["advantages"], atol=1e-5, rtol=1e-5)
    assert any(record["advantages"].abs().max() > 0.1 for record in upstream_records)  # not trivially zero
    # `frac_reward_zero_std` is the fraction of groups whose rewards tie; TRL's `normalize_then_sum` counts rows under
    # a zero batch std instead, which differs when a group ties (as groups of 3 uppercase rewards can).
    keys = (
        ("reward", "reward_std")
        if reward_funcs[0] is lower_in_first_row
        else ("reward", "reward_std", "frac_reward_zero_std")
    )
    for key in keys:
        assert clp.state.log_history[-2][key] == pytest.approx(upstream.state.log_history[-2][key], abs=1e-5), key


# ---------------------------------------------------------------------------------------------- advantages by value


def sequence_logps(model, record, vectors, conditioner) -> torch.Tensor:
    """`(N,)` summed completion log-probabilities, recomputed with a plain forward (not the trainer's path)."""
    ids = torch.cat([record["prompt_ids"], record["completion_ids"]], dim=1)
    mask = torch.cat([record["prompt_mask"], record["completion_mask"]], dim=1)
    length = record["completion_ids"].size(1)
    with torch.no_grad(), conditioner.condition(vectors):
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -length - 1 : -1].float()
    logps = logits.log_softmax(-1).gather(-1, record["completion_ids"].unsqueeze(-1)).squeeze(-1)
    return (logps * record["completion_mask"]).sum(1)


# num_iterations=2: GRPO computes the old log-probabilities itself; 1: the trainer adds that forward for the KL.
@pytest.mark.parametrize("scale_rewards, num_iterations", [("group", 2), ("batch", 1)])
def test_advantages_by_value_with_multi_alpha_and_buffered_steps(
    tmp_path, tokenizer, prompts_dataset, scale_rewards, num_iterations
):
    """Non-uniform weightings, α per group (multi-α), 2 buffered steps per generation and gradient accumulation:
    each generation's advantages equal a recomputation from the raw rewards, the weightings, and a KL recomputed by
    an independent forward pass; every group keeps one weighting in every micro-batch."""
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        max_steps=4,
        gradient_accumulation_steps=2,
        steps_per_generation=2,
        num_iterations=num_iterations,
        kl_weights=[0.05, 0.5],
        beta=0.05,
        scale_rewards=scale_rewards,
    )
    model, conditioner = trainer.model, trainer.conditioner
    generate = trainer._generate_and_score_completions
    checked = []

    def checking(inputs):
        output = generate(inputs)
        rewards_per_objective = trainer.state.__dict__.pop("_test_rewards")
        vectors = output["conditioning_vectors"]  # (N, 3): (s·w, 1 − s) with s = α0 / α
        scale = 1 - vectors[:, 2]
        weights, alpha = vectors[:, :2] / scale.unsqueeze(1), 0.05 / scale
        policy = sequence_logps(model, output, vectors, conditioner)
        with model.disable_adapter():
            reference = sequence_logps(model, output, vectors, conditioner)
        reward = (weights * rewards_per_objective).sum(1) - alpha * (policy - reference)
        grouped = reward.view(-1, 4)
        centred = grouped - grouped.mean(1, keepdim=True)
        std = grouped.std(1, keepdim=True) if scale_rewards == "group" else reward.std()
        # The independent forward differs from the trainer's chunked one by float rounding (~1e-6 per token), which
        # the division by a std of about 0.1 amplifies; a wrong α, w or KL shows up orders of magnitude above this.
        torch.testing.assert_close(output["advantages"], (centred / (std + 1e-4)).view(-1), atol=2e-4, rtol=1e-3)
        assert (vectors.view(-1, 4, 3) == vectors.view(-1, 4, 3)[:, :1]).all()  # one weighting per group
        assert len(set(alpha.tolist())) > 1 and len({tuple(w) for w in weights.tolist()}) > 1
        assert (policy - reference).abs().max() > 1e-4 or not checked  # KL non-zero once the adapter moved
        checked.append(True)
        return output

    calculate = trainer._calculate_rewards

    def calculating(*args):
        rewards = calculate(*args)
        trainer.state.__dict__["_test_rewards"] = rewards.clone()
        return rewards

    trainer._calculate_rewards, trainer._generate_and_score_completions = calculating, checking
    seen = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        seen.append((inputs["prompt_ids"].clone(), inputs["conditioning_vectors"].clone()))
        return compute_loss(model, inputs, *args, **kwargs)

    trainer.compute_loss = recording
    trainer.train()
    assert len(checked) == 4 // num_iterations and len(seen) == 8  # 4 steps × 2 micro-batches; 2 per generation
    by_prompt = {}
    for prompt_ids, vectors in seen:
        for ids, v in zip(prompt_ids, vectors, strict=True):
            by_prompt.setdefault(tuple(ids.tolist()), set()).add(tuple(round(x, 6) for x in v.tolist()))
    assert all(len(vs) == 1 for vs in by_prompt.values()), "a prompt group was split across weightings"


# ---------------------------------------------------------------------------------------------- training behaviour


LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


def test_every_loss_type_trains(tmp_path, tokenizer, prompts_dataset):
    """Every GRPO loss_type, on one conditioned generation batch: finite loss, finite gradient reaching the
    conditioned blocks, and an optimizer step that moves them. (`loss_type` only changes how `_compute_loss`
    aggregates the token losses, so one trainer serves all of them.)"""
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=1, beta=0.05)
    trainer.train()  # one real step (default loss_type), so that the batch below is off-policy by one update
    trainer.current_gradient_accumulation_steps = 1
    inputs = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    params = {n: p for n, p in trainer.model.named_parameters() if p.requires_grad}
    for loss_type in LOSS_TYPES:
        trainer.loss_type = loss_type
        trainer.model.zero_grad()
        try:
            loss = trainer.compute_loss(trainer.model, inputs)
            loss.backward()
        finally:
            trainer.conditioner.clear()
        assert torch.isfinite(loss), loss_type
        grads = [p.grad for n, p in params.items() if "lora_B" in n]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), loss_type
        assert sum(g.abs().sum() for g in grads) > 0, f"{loss_type}: no gradient reached the LoRA blocks"
    before = {n: p.detach().clone() for n, p in params.items()}
    torch.optim.SGD(params.values(), lr=1.0).step()
    assert any(not torch.equal(before[n], p) for n, p in params.items())


def test_one_hot_weighting_leaves_the_other_objectives_blocks_untouched(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(
        tmp_path,
        tokenizer,
        prompts_dataset,
        max_steps=2,
        weight_distribution="fixed",
        fixed_weights=["1,0"],
        beta=0.05,
    )
    before = trainable(trainer)
    trainer.train()
    after = trainable(trainer)
    moved = {0: False, 1: False}
    for name, value in before.items():
        if "lora_A" in name:  # (2·r, in): block i is rows [i·r, (i+1)·r)
            blocks = [value[:4], value[4:]], [after[name][:4], after[name][4:]]
        elif "lora_B" in name:  # (out, 2·r): block i is columns [i·r, (i+1)·r)
            blocks = [value[:, :4], value[:, 4:]], [after[name][:, :4], after[name][:, 4:]]
        else:
            continue
        assert torch.equal(blocks[0][1], blocks[1][1]), f"{name}: the zero-weight block moved"
        moved[0] |= not torch.equal(blocks[0][0], blocks[1][0])
    assert moved[0], "the weighted block never moved"


def test_resume_continues_the_weight_stream_and_the_ideal_point(tmp_path, tokenizer, prompts_dataset):
    common = dict(max_steps=4, save_strategy="steps", save_steps=2, beta=0.05, scalarization="tchebycheff")
    full = make_trainer(tmp_path / "full", tokenizer, prompts_dataset, **common)
    full_records = record_rewards_and_outputs(full)
    full.train()
    resumed = make_trainer(tmp_path / "full", tokenizer, prompts_dataset, **common)
    resumed_records = record_rewards_and_outputs(resumed)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "out" / "checkpoint-2"))
    assert len(resumed_records) == 2
    for expected, got in zip(full_records[2:], resumed_records, strict=True):
        torch.testing.assert_close(got["conditioning_vectors"], expected["conditioning_vectors"])
    # The running maxima continued from the checkpoint's, not from scratch.
    torch.testing.assert_close(resumed.ideal_point.maxima, full.ideal_point.maxima)
    from_scratch = torch.stack([r["rewards"].amax(0) for r in resumed_records]).amax(0).double()
    assert (resumed.ideal_point.maxima >= from_scratch).all()


# ---------------------------------------------------------------------------------------------- evaluation


@pytest.mark.parametrize("trainer_class", [MultiObjectiveTrainer, MultiObjectiveGRPOTrainer])
def test_an_evaluation_batch_larger_than_the_generation_batch(tmp_path, tokenizer, prompts_dataset, trainer_class):
    """Train batch 4, eval batch 8: TRL's completions table keeps `generation_batch_size` = 4 rows, and the eval step
    must replace the newest 4 of them with the per-row advantages (upstream trains and evaluates this setup)."""
    config = trainer_class.config_class(
        **tiny_config_values(
            tmp_path, per_device_train_batch_size=4, per_device_eval_batch_size=8, eval_strategy="steps", eval_steps=1
        )
    )
    trainer = trainer_class(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=config,
        train_dataset=prompts_dataset,
        eval_dataset=prompts_dataset.select(range(2)),  # 2 prompts × 4 generations: one batch of 8
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    records = record_rewards_and_outputs(trainer)
    trainer.train()
    evaluation = records[-1]
    assert len(records) == 4 and evaluation["advantages"].numel() == 8  # train, eval, train, eval
    torch.testing.assert_close(torch.tensor(list(trainer._logs["advantages"])), evaluation["advantages"][-4:])
    expected_reward = (evaluation["rewards"] * evaluation["conditioning_vectors"]).sum(1).mean()  # w·R per row
    assert trainer.state.log_history[-2]["eval_reward"] == pytest.approx(expected_reward.item(), abs=1e-6)


# ---------------------------------------------------------------------------------------------- TRL upgrade guard

# The private TRL methods the conditioning layer overrides (listed in docs/trainer.md): an upgrade that changes one of
# these signatures must fail here, not silently at training time.
PRIVATE_OVERRIDES = {
    "_generate_and_score_completions": ["self", "inputs"],
    "_calculate_rewards": ["self", "inputs", "prompts", "completions", "completion_ids_list"],
    "_generate": ["self", "prompts"],
    "_get_per_token_logps_and_entropies": [
        "self",
        "model",
        "input_ids",
        "attention_mask",
        "logits_to_keep",
        "batch_size",
        "compute_entropy",
        "compute_aux_loss",
        "pixel_values",
        "image_grid_thw",
        "num_images",
        "pixel_attention_mask",
        "spatial_shapes",
        "num_tiles",
        "image_sizes",
        "token_type_ids",
        "mm_token_type_ids",
        "image_position_ids",
    ],
    "_save": ["self", "output_dir", "state_dict"],
}


@pytest.mark.parametrize("trainer_class", [RLOOTrainer, GRPOTrainer])
@pytest.mark.parametrize("method", sorted(PRIVATE_OVERRIDES))
def test_overridden_private_trl_methods_keep_their_signature(trainer_class, method):
    parameters = list(inspect.signature(getattr(trainer_class, method)).parameters)
    assert parameters == PRIVATE_OVERRIDES[method], (
        f"{trainer_class.__name__}.{method} changed its signature to {parameters}: re-check the override in "
        "trl_clp/online_trainer.py (ConditionedTrainerMixin) against the new TRL code."
    )


def test_the_model_card_names_grpo_as_the_policy_gradient_step(tmp_path, tokenizer, prompts_dataset):
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset)
    trainer.save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert (
        "with GRPO ([Shao et al., 2024](https://huggingface.co/papers/2402.03300)) as its policy-gradient step" in card
    )
    assert "with RLOO (" not in card
