"""Conditioning features (`trl_clp.conditioning.features`): shared and pairwise blocks beside the per-objective ones.

The per-row mixing is checked against a merged model built by hand from the blocks and the documented coefficients
(not through `block_coefficients`, `merge` or PEFT's scaling), on non-uniform weightings with 2 and 3 objectives.
"""

import dataclasses
import json

import pytest
import torch
from peft import LoraConfig, PeftModel
from peft.tuners.lora import LoraLayer

from trl_clp import (
    MultiObjectiveConfig,
    MultiObjectiveGRPOConfig,
    MultiObjectiveGRPOTrainer,
    MultiObjectiveTrainer,
    SteerableModel,
    demo,
)
from trl_clp.conditioning.config import CLP_CONFIG_NAME, ConditioningConfig
from trl_clp.conditioning.features import block_coefficients, block_names, num_blocks_of

from .conftest import TARGETS, lower, tiny_config_values, upper

RANK, ALPHA = 2, 4  # the per-objective LoRA: a linear block at weight w_i has scale w_i·ALPHA/RANK
INPUT_IDS = torch.tensor([[1, 40, 41, 42, 43, 44], [1, 70, 71, 72, 73, 74], [1, 40, 41, 42, 43, 44]])


def steerable(names, features, conditioning="full", seed=1):
    # init_lora_weights=False: random B as well as A, so that every block changes the output.
    lora = LoraConfig(
        r=RANK, lora_alpha=ALPHA, init_lora_weights=False, target_modules=["q_proj", "v_proj", "up_proj"]
    )
    base = demo.make_tiny_llama(seed=0)
    torch.manual_seed(seed)
    steer = SteerableModel.from_base_model(base, names, lora, conditioning, conditioning_features=features)
    return steer.eval()


# The documented coefficient of each block, in units of the per-objective scale ALPHA/RANK, written out by hand for
# the weightings used below: linear w_i; shared 1/n; pairwise n·w_i·w_j (n²·w_i·w_j at the layer's scale α/(n·r)).
HAND_COEFFICIENTS = {
    # two objectives, w = (0.3, 0.7): blocks a, b, shared, a*b
    ("linear", "shared", "pairwise", (0.3, 0.7)): [0.3, 0.7, 1 / 2, 2 * 0.3 * 0.7],
    ("linear", "shared", (0.3, 0.7)): [0.3, 0.7, 1 / 2],
    ("linear", "pairwise", (0.3, 0.7)): [0.3, 0.7, 2 * 0.3 * 0.7],
    ("linear", "shared", "pairwise", (1.0, 0.0)): [1.0, 0.0, 1 / 2, 0.0],
    # three objectives, w = (0.2, 0.5, 0.3): blocks a, b, c, shared, a*b, a*c, b*c
    ("linear", "shared", "pairwise", (0.2, 0.5, 0.3)): [0.2, 0.5, 0.3, 1 / 3, 3 * 0.1, 3 * 0.06, 3 * 0.15],
    ("linear", "pairwise", (0.2, 0.5, 0.3)): [0.2, 0.5, 0.3, 3 * 0.1, 3 * 0.06, 3 * 0.15],
}


def hand_merged_model(steer: SteerableModel, coefficients: list[float]) -> torch.nn.Module:
    """The base model with each LoRA layer's delta added by hand: conditioned layers Σ_k c_k·(α/r)·B_k A_k from the
    rank-RANK blocks, shared (rank-r) layers (α/r)·B A."""
    merged = demo.make_tiny_llama(seed=0).eval()
    base_modules = dict(merged.named_modules())
    conditioned = set(steer.conditioning_config.conditioned_modules)
    for name, layer in steer.model.named_modules():
        if not isinstance(layer, LoraLayer):
            continue
        lora_a, lora_b = layer.lora_A["default"].weight.detach(), layer.lora_B["default"].weight.detach()
        if name in conditioned:
            delta = sum(
                c * (ALPHA / RANK) * lora_b[:, k * RANK : (k + 1) * RANK] @ lora_a[k * RANK : (k + 1) * RANK]
                for k, c in enumerate(coefficients)
            )
            assert lora_a.size(0) == RANK * len(coefficients)  # the layer has exactly these blocks
        else:
            delta = (ALPHA / RANK) * lora_b @ lora_a
        target = base_modules[name.removeprefix("base_model.model.")]
        target.weight.data += delta
    return merged


def test_block_coefficients_by_hand():
    vectors = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.5, 0.5]])
    expected = torch.tensor(
        [
            [0.6, 1.4, 1.0, 4 * 0.21],  # n·w_i, 1, n²·w_1·w_2
            [2.0, 0.0, 1.0, 0.0],  # a corner: the pairwise block is off
            [1.0, 1.0, 1.0, 1.0],  # the centre: every block at 1 (what a plain PEFT load computes)
        ]
    )
    torch.testing.assert_close(block_coefficients(vectors, ["linear", "shared", "pairwise"]), expected)
    # Block order is the features' fixed order, whatever order they were listed in.
    torch.testing.assert_close(block_coefficients(vectors, ["pairwise", "linear"]), expected[:, [0, 1, 3]])
    three = block_coefficients(torch.tensor([[0.2, 0.5, 0.3]]), ["linear", "pairwise"])
    torch.testing.assert_close(three, torch.tensor([[0.6, 1.5, 0.9, 9 * 0.1, 9 * 0.06, 9 * 0.15]]))
    torch.testing.assert_close(block_coefficients(torch.full((1, 3), 1 / 3), ["linear", "pairwise"]), torch.ones(1, 6))
    assert num_blocks_of(["linear", "shared", "pairwise"], 3) == 3 + 1 + 3
    assert block_names(["linear", "shared", "pairwise"], ["a", "b", "c"]) == [
        *("a", "b", "c", "shared"),
        *("a*b", "a*c", "b*c"),
    ]


@pytest.mark.parametrize(
    ("names", "features", "weights"),
    [
        (["a", "b"], ["linear", "shared", "pairwise"], (0.3, 0.7)),
        (["a", "b"], ["linear", "shared"], (0.3, 0.7)),
        (["a", "b"], ["linear", "pairwise"], (0.3, 0.7)),
        (["a", "b", "c"], ["linear", "shared", "pairwise"], (0.2, 0.5, 0.3)),
        (["a", "b", "c"], ["linear", "pairwise"], (0.2, 0.5, 0.3)),
    ],
)
@pytest.mark.parametrize("conditioning", ["full", "attn"])
def test_conditioned_model_equals_a_hand_built_merged_model(names, features, weights, conditioning):
    steer = steerable(names, features, conditioning)
    coefficients = HAND_COEFFICIENTS[(*features, weights)]
    with torch.no_grad():
        expected = hand_merged_model(steer, coefficients)(input_ids=INPUT_IDS).logits
        with steer.condition(torch.tensor(weights), batch_size=len(INPUT_IDS)):
            got = steer(input_ids=INPUT_IDS).logits
        merged = steer.merge(torch.tensor(weights))(input_ids=INPUT_IDS).logits
        # The feature blocks matter: the same model without them (their coefficients set to 0) differs.
        linear_only = hand_merged_model(steer, coefficients[: len(names)] + [0.0] * (len(coefficients) - len(names)))
        without_features = linear_only(input_ids=INPUT_IDS).logits
    assert (got - expected).abs().max() <= 1e-5
    assert (merged - expected).abs().max() <= 1e-5
    assert (without_features - expected).abs().max() > 1e-3


def test_a_mixed_batch_equals_each_row_alone_with_its_hand_built_model():
    steer = steerable(["a", "b"], ["linear", "shared", "pairwise"])
    rows = [(0.3, 0.7), (1.0, 0.0), (0.3, 0.7)]
    weights = torch.tensor([(0.3, 0.7), (1.0, 0.0), (0.5, 0.5)])
    centre = [0.5, 0.5, 0.5, 2 * 0.25]
    hand = {
        0: HAND_COEFFICIENTS[("linear", "shared", "pairwise", rows[0])],
        1: HAND_COEFFICIENTS[("linear", "shared", "pairwise", rows[1])],
        2: centre,
    }
    with torch.no_grad(), steer.condition(weights):
        mixed = steer(input_ids=INPUT_IDS).logits
    for row in range(3):
        with torch.no_grad():
            alone = hand_merged_model(steer, hand[row])(input_ids=INPUT_IDS[row : row + 1]).logits[0]
        assert (mixed[row] - alone).abs().max() <= 1e-5
    assert (mixed[0] - mixed[2]).abs().max() > 1e-3  # rows 0 and 2 share a prompt: only w tells them apart


def test_one_hot_weighting_gives_pairwise_blocks_exactly_zero_gradient():
    steer = steerable(["a", "b", "c"], ["linear", "shared", "pairwise"])
    steer.train()
    with steer.condition(torch.tensor([0.0, 1.0, 0.0]), batch_size=2):
        steer(input_ids=INPUT_IDS[:2]).logits.pow(2).mean().backward()
    q_proj = steer.model.base_model.model.model.layers[0].self_attn.q_proj
    grad_a, grad_b = q_proj.lora_A["default"].weight.grad, q_proj.lora_B["default"].weight.grad  # (7r, in), (out, 7r)

    def block(grad_rows_or_cols, k, of_b=False):
        return (
            grad_rows_or_cols[:, k * RANK : (k + 1) * RANK] if of_b else grad_rows_or_cols[k * RANK : (k + 1) * RANK]
        )

    for k in (0, 2, 4, 5, 6):  # the other linear blocks, and the three pairwise blocks
        assert torch.equal(block(grad_a, k), torch.zeros_like(block(grad_a, k)))
        assert torch.equal(block(grad_b, k, of_b=True), torch.zeros_like(block(grad_b, k, of_b=True)))
    for k in (1, 3):  # b's own block and the shared block train
        assert block(grad_a, k).abs().sum() > 0 and block(grad_b, k, of_b=True).abs().sum() > 0


@pytest.mark.parametrize("names", [["a", "b"], ["a", "b", "c"]])
def test_plain_peft_load_is_the_uniform_weighting_with_every_feature(tmp_path, names):
    steer = steerable(names, ["linear", "shared", "pairwise"])
    steer.save_pretrained(tmp_path / "clp")
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "clp")).eval()
    uniform = torch.full((len(names),), 1 / len(names))
    with torch.no_grad(), steer.condition(uniform, batch_size=3):
        expected = steer(input_ids=INPUT_IDS).logits
        corner = torch.eye(len(names))[0]
    with torch.no_grad():
        got = plain(input_ids=INPUT_IDS).logits
        with steer.condition(corner, batch_size=3):
            at_corner = steer(input_ids=INPUT_IDS).logits
    assert (got - expected).abs().max() <= 1e-5
    assert (got - at_corner).abs().max() > 1e-3


def test_save_load_round_trip_records_the_features(tmp_path):
    steer = steerable(["a", "b"], ["shared", "linear"])  # listed out of order: saved in block order
    base_path = tmp_path / "base"
    demo.make_tiny_llama(seed=0).save_pretrained(base_path)
    steer.model.peft_config["default"].base_model_name_or_path = str(base_path)
    steer.save_pretrained(tmp_path / "clp")
    saved = json.loads((tmp_path / "clp" / CLP_CONFIG_NAME).read_text())
    assert saved["conditioning_features"] == ["linear", "shared"] and saved["num_blocks"] == 3
    adapter = json.loads((tmp_path / "clp" / "adapter_config.json").read_text())
    assert adapter["r"] == 3 * RANK and adapter["lora_alpha"] == ALPHA * 3 / 2  # scale α/(n·r) per block
    loaded = SteerableModel.from_pretrained(str(tmp_path / "clp"))
    assert loaded.conditioner.features == ("linear", "shared")
    weights = torch.tensor([[0.3, 0.7], [1.0, 0.0], [0.0, 1.0]])
    with torch.no_grad(), steer.condition(weights), loaded.condition(weights):
        torch.testing.assert_close(loaded(input_ids=INPUT_IDS).logits, steer(input_ids=INPUT_IDS).logits)


def test_a_clp_config_without_features_loads_as_linear(tmp_path):
    steer = steerable(["a", "b"], ["linear"])
    steer.save_pretrained(tmp_path / "clp")
    path = tmp_path / "clp" / CLP_CONFIG_NAME
    values = json.loads(path.read_text())
    del values["conditioning_features"]  # a file written before the field
    path.write_text(json.dumps(values))
    config = ConditioningConfig.load(str(path))
    assert config.conditioning_features == ["linear"]
    with pytest.raises(ValueError, match="does not describe its adapter"):
        dataclasses.replace(config, conditioning_features=["linear", "shared"])  # 2 blocks recorded, 3 implied


@pytest.mark.parametrize(
    ("conditioning", "names", "weights"),
    [("full", ["a", "b"], [0.3, 0.7]), ("attn", ["a", "b", "c"], [0.2, 0.5, 0.3]), ("logit", ["a", "b"], [0.9, 0.1])],
)
def test_export_lora_equals_merge_and_the_conditioned_model(tmp_path, conditioning, names, weights):
    steer = steerable(names, ["linear", "shared", "pairwise"], conditioning)
    weights = torch.tensor(weights)
    steer.export_lora(str(tmp_path / "export"), weights)
    config = json.loads((tmp_path / "export" / "adapter_config.json").read_text())
    num_blocks = num_blocks_of(["linear", "shared", "pairwise"], len(names))
    assert config["r"] == num_blocks * RANK and not config["rank_pattern"] and not config["alpha_pattern"]
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "export")).eval()
    with torch.no_grad(), steer.condition(weights, batch_size=3):
        expected = steer(input_ids=INPUT_IDS).logits
    with torch.no_grad():
        exported = plain(input_ids=INPUT_IDS).logits
        merged = steer.merge(weights)(input_ids=INPUT_IDS).logits
    assert (exported - expected).abs().max() <= 1e-5
    assert (merged - expected).abs().max() <= 1e-5


def test_kl_block_counts_as_one_more_objective_to_the_features(tmp_path):
    """Multi-α: the conditioning vector (s·w, 1 − s) with s = α0/α gets the features, its KL entry paired too."""
    two = steerable(["reward", "kl"], ["linear", "shared", "pairwise"])  # blocks: reward, kl, shared, reward*kl
    config = dataclasses.replace(two.conditioning_config, objective_names=["reward"], min_kl_weight=0.1)
    steer = SteerableModel(two.model, config, conditioner=two.conditioner)
    # α = 0.4: s = 0.25, v = (0.25, 0.75); by hand: 0.25, 0.75, 1/2, 2·0.25·0.75.
    expected_model = hand_merged_model(steer, [0.25, 0.75, 0.5, 2 * 0.25 * 0.75])
    with torch.no_grad(), steer.condition(torch.tensor([1.0]), kl_weight=0.4, batch_size=3):
        got = steer(input_ids=INPUT_IDS).logits
    with torch.no_grad():
        assert (got - expected_model(input_ids=INPUT_IDS).logits).abs().max() <= 1e-5
    steer.export_lora(str(tmp_path / "export"), torch.tensor([1.0]), kl_weight=0.4)
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "export")).eval()
    with torch.no_grad():
        assert (plain(input_ids=INPUT_IDS).logits - got).abs().max() <= 1e-5


# ---------------------------------------------------------------------------------------------- configuration


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"conditioning_features": ["linear", "cubic"]}, r"unknown names \['cubic'\]"),
        ({"conditioning_features": ["shared"]}, r"must include 'linear'.*\['linear', 'shared'\]"),
        ({"conditioning_features": ["linear", "shared", "shared"]}, "more than once"),
        ({"conditioning_features": ["linear", "shared"], "conditioning": "prompt"}, "Remove `conditioning_features`"),
        (
            {"conditioning_features": ["linear", "pairwise"], "weight_distribution": "one_hot"},
            "Remove 'pairwise'.*or draw weightings inside",
        ),
        (
            {
                "conditioning_features": ["linear", "pairwise"],
                "weight_distribution": "fixed",
                "fixed_weights": ["1,0", "0,1"],
            },
            "would never train",
        ),
    ],
)
def test_bad_feature_configs_name_the_fix(tmp_path, overrides, message):
    with pytest.raises(ValueError, match=message):
        MultiObjectiveConfig(**tiny_config_values(tmp_path, **overrides))


def test_pairwise_with_one_hot_draws_is_allowed_when_the_kl_entry_pairs_with_each_objective(tmp_path):
    config = MultiObjectiveConfig(
        **tiny_config_values(
            tmp_path, conditioning_features=["linear", "pairwise"], weight_distribution="one_hot", kl_weights=[0.1, 1]
        )
    )
    assert config.conditioning_features == ["linear", "pairwise"]


def test_the_command_line_takes_several_features(tmp_path):
    from trl_clp.scripts.train import make_parser

    argv = ["--output_dir", str(tmp_path), "--conditioning_features", "linear", "shared", "--bf16", "False"]
    _, training_args, _ = make_parser().parse_args_and_config(args=argv)
    assert training_args.conditioning_features == ["linear", "shared"]
    with pytest.raises(SystemExit):  # argparse names the choices
        make_parser().parse_args_and_config(args=[*argv[:3], "linear", "cubic"])


# ---------------------------------------------------------------------------------------------- trainers


def lora_b_block_norms(model, num_blocks: int, rank: int = 4) -> torch.Tensor:
    """`(K,)` the summed norms of every conditioned layer's `lora_B` block k."""
    norms = torch.zeros(num_blocks)
    for module in model.modules():
        if isinstance(module, LoraLayer) and module.r["default"] == num_blocks * rank:
            weight = module.lora_B["default"].weight.detach()
            norms += torch.stack([weight[:, k * rank : (k + 1) * rank].norm() for k in range(num_blocks)])
    return norms


def test_rloo_trains_saves_and_loads_a_model_with_shared_and_pairwise_blocks(tmp_path, tokenizer, prompts_dataset):
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=MultiObjectiveConfig(
            **tiny_config_values(tmp_path, conditioning_features=["linear", "shared", "pairwise"], max_steps=3)
        ),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    assert trainer.conditioner.num_blocks == 4
    assert lora_b_block_norms(trainer.model, 4).abs().sum() == 0  # PEFT's B starts at zero
    trainer.train()
    norms = lora_b_block_norms(trainer.model, 4)
    assert (norms > 0).all(), norms  # every block trained: a, b, the shared block, and a*b (Dirichlet draws)
    trainer.save_model()
    saved = json.loads((tmp_path / "out" / CLP_CONFIG_NAME).read_text())
    assert saved["conditioning_features"] == ["linear", "shared", "pairwise"] and saved["num_blocks"] == 4
    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    trained = SteerableModel(trainer.model, trainer.conditioning_config, conditioner=trainer.conditioner)
    trainer.model.eval()
    weights = torch.tensor([[0.3, 0.7], [0.5, 0.5], [1.0, 0.0]])
    with torch.no_grad(), steer.condition(weights), trained.condition(weights):
        torch.testing.assert_close(steer(input_ids=INPUT_IDS).logits, trained(input_ids=INPUT_IDS).logits)

    other = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=MultiObjectiveConfig(**tiny_config_values(tmp_path, conditioning_features=["linear"], max_steps=4)),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    with pytest.raises(ValueError, match=r"Resume with `conditioning_features` \['linear', 'shared', 'pairwise'\]"):
        other.train(resume_from_checkpoint=str(tmp_path / "out"))


def test_a_short_run_moves_the_shared_block_at_the_per_objective_scale(tmp_path, tokenizer, prompts_dataset):
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=MultiObjectiveConfig(**tiny_config_values(tmp_path, conditioning_features=["linear", "shared"])),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    q_proj = trainer.model.base_model.model.model.layers[0].self_attn.q_proj
    # Rank 3·r and alpha 8·3/2: the layer's scale is α/(n·r), so a linear block (coefficient n·w_i) has the
    # per-objective scale w_i·α/r, as without the shared block.
    assert q_proj.r["default"] == 12 and q_proj.scaling["default"] == 8 / (2 * 4)
    trainer.train()
    norms = lora_b_block_norms(trainer.model, 3)
    assert norms[2] > 0 and (norms > 0).all(), norms  # the shared block moved, with the per-objective ones


def test_grpo_trains_with_features(tmp_path, tokenizer, prompts_dataset):
    trainer = MultiObjectiveGRPOTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=MultiObjectiveGRPOConfig(
            **tiny_config_values(tmp_path, conditioning_features=["linear", "shared", "pairwise"], max_steps=2)
        ),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    trainer.train()
    assert (lora_b_block_norms(trainer.model, 4) > 0).all()
    trainer.save_model()
    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    assert steer.conditioner.features == ("linear", "shared", "pairwise")


def test_multi_alpha_training_pairs_the_kl_entry(tmp_path, tokenizer, prompts_dataset):
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lower, upper],
        args=MultiObjectiveConfig(
            **tiny_config_values(tmp_path, conditioning_features=["linear", "pairwise"], kl_weights=[0.05, 0.5])
        ),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    assert trainer.conditioner.num_blocks == 3 + 3  # lower, upper, kl; lower*upper, lower*kl, upper*kl
    trainer.train()
    trainer.save_model()
    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    assert steer.conditioning_config.num_blocks == 6 and steer.conditioning_config.min_kl_weight == 0.05
    export = steer.export_lora(str(tmp_path / "export"), torch.tensor([0.3, 0.7]), kl_weight=0.2)
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), export).eval()
    with torch.no_grad(), steer.condition(torch.tensor([0.3, 0.7]), kl_weight=0.2, batch_size=3):
        expected = steer(input_ids=INPUT_IDS).logits
    with torch.no_grad():
        assert (plain(input_ids=INPUT_IDS).logits - expected).abs().max() <= 1e-5


def test_dpo_trains_with_features(tmp_path):
    from .test_dpo_trainer import case_pairs, make_trainer

    trainer = make_trainer(tmp_path, case_pairs(16, seed=0), conditioning_features=["linear", "shared"])
    assert lora_b_block_norms(trainer.model, 3, rank=2).abs().sum() == 0
    trainer.train()
    norms = lora_b_block_norms(trainer.model, 3, rank=2)
    assert (norms > 0).all(), norms
    trainer.save_model()
    steer = SteerableModel.from_pretrained(str(tmp_path / "out"), base_model=demo.make_tiny_llama(seed=0))
    assert steer.conditioner.features == ("linear", "shared")
