"""The conditioned adapter: per-row mixing is exact, blocks are independent, saving round-trips."""

import json
import warnings

import pytest
import torch
from peft import LoraConfig, PeftModel
from transformers import AutoModelForCausalLM, GenerationConfig

from trl_clp import ConditioningConfig, MultiObjectiveTrainer, SteerableModel, demo
from trl_clp.conditioning.layer import scale_lora_blocks
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import TARGETS, bos_tokenizer, tiny_config, training_prompt_ids

WEIGHTS = torch.tensor([[1.0, 0.0], [0.3, 0.7], [0.0, 1.0]])


def make_steerable(variant="full", seed=0, tokenizer=None, tied=False):
    # Random B as well as A: with PEFT's default zero B every block would be a no-op and mixing trivially exact.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    base = demo.make_tiny_llama(seed=seed, tie_word_embeddings=tied)
    torch.manual_seed(seed)
    model = SteerableModel.from_base_model(base, ["a", "b"], lora, variant, tokenizer=tokenizer)
    return model.eval()


def batch(rows=3, length=7):
    generator = torch.Generator().manual_seed(1)
    return torch.randint(3, 259, (rows, length), generator=generator)


def test_scale_lora_blocks_by_hand():
    hidden = torch.ones(2, 1, 4)  # two rows, m=2 blocks of rank 2
    weights = torch.tensor([[0.25, 0.75], [1.0, 0.0]])
    expected = torch.tensor([[[0.5, 0.5, 1.5, 1.5]], [[2.0, 2.0, 0.0, 0.0]]])
    torch.testing.assert_close(scale_lora_blocks(hidden, weights), expected)


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("variant", ["full", "attn", "logit"])
def test_per_row_mixing_equals_merged_model(variant, tied):
    steer = make_steerable(variant, tied=tied)
    input_ids = torch.cat([batch(rows=2), batch(rows=1)])  # rows 0 and 2 share a prompt: only w tells them apart
    with torch.no_grad(), steer.condition(WEIGHTS):
        mixed = steer(input_ids=input_ids).logits
    for row, weights in enumerate(WEIGHTS):
        merged = steer.merge(weights).eval()
        with torch.no_grad():
            expected = merged(input_ids=input_ids[row : row + 1]).logits[0]
        assert (mixed[row] - expected).abs().max() <= 1e-5
    # The weighting really changes the output: a conditioning that ignored w would fail here.
    assert (mixed[0] - mixed[2]).abs().max() > 1e-2


def test_attn_variant_conditions_only_attention():
    steer = make_steerable("attn")
    conditioned = {name.split(".")[-1] for name in steer.conditioning_config.conditioned_modules}
    assert conditioned == {"q_proj", "k_proj", "v_proj", "o_proj"}
    assert steer.model.base_model.model.model.layers[0].mlp.up_proj.r["default"] == 4
    assert steer.model.base_model.model.model.layers[0].self_attn.q_proj.r["default"] == 8


@pytest.mark.parametrize("variant", ["full", "logit"])
@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
def test_greedy_generation_is_token_identical_to_merged_models(variant, tied):
    steer = make_steerable(variant, tied=tied)
    input_ids = batch(rows=1, length=5).expand(len(WEIGHTS), -1)  # one prompt under each weighting
    out = steer.generate(input_ids, weights=WEIGHTS, max_new_tokens=12, do_sample=False, pad_token_id=0)
    for row, weights in enumerate(WEIGHTS):
        merged = steer.merge(weights).eval()
        expected = merged.generate(input_ids[row : row + 1], max_new_tokens=12, do_sample=False, pad_token_id=0)
        assert torch.equal(out[row], expected[0])
    assert not torch.equal(out[0], out[2])  # the weighting steers the tokens


def test_one_hot_weight_trains_only_its_block():
    steer = make_steerable()
    steer.train()
    with steer.condition(torch.tensor([1.0, 0.0]), batch_size=2):
        steer(input_ids=batch(rows=2)).logits.pow(2).mean().backward()
    q_proj = steer.model.base_model.model.model.layers[0].self_attn.q_proj
    grad_a, grad_b = q_proj.lora_A["default"].weight.grad, q_proj.lora_B["default"].weight.grad  # (8, in), (out, 8)
    assert grad_a[:4].abs().sum() > 0 and grad_b[:, :4].abs().sum() > 0
    assert torch.equal(grad_a[4:], torch.zeros_like(grad_a[4:]))
    assert torch.equal(grad_b[:, 4:], torch.zeros_like(grad_b[:, 4:]))


def test_forward_without_a_weighting_fails_loudly():
    steer = make_steerable()
    with pytest.raises(RuntimeError, match="condition"):
        steer(input_ids=batch())


def test_weighting_count_must_match_the_batch():
    steer = make_steerable()
    with pytest.raises(RuntimeError, match="one weighting per row"), steer.condition(WEIGHTS[:2]):
        steer(input_ids=batch(rows=3))


def test_bad_weights_are_rejected_before_the_forward():
    steer = make_steerable()
    with pytest.raises(ValueError, match="sum to 1"), steer.condition(torch.tensor([0.5, 0.6])):
        pass


def test_a_new_weighting_takes_effect_at_once():
    """The block scaling is cached per weighting: each new weighting (set or nested) must replace it."""
    steer = make_steerable()
    input_ids = batch(rows=1)
    first, second = torch.tensor([0.9, 0.1]), torch.tensor([0.2, 0.8])
    with torch.no_grad():
        expected = {w: steer.merge(w)(input_ids=input_ids).logits for w in (first, second)}
        with steer.condition(first):
            torch.testing.assert_close(steer(input_ids=input_ids).logits, expected[first], atol=1e-5, rtol=1e-5)
            with steer.condition(second):
                torch.testing.assert_close(steer(input_ids=input_ids).logits, expected[second], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(steer(input_ids=input_ids).logits, expected[first], atol=1e-5, rtol=1e-5)
        steer.conditioner.set_conditioning_vectors(second.unsqueeze(0))
        try:
            torch.testing.assert_close(steer(input_ids=input_ids).logits, expected[second], atol=1e-5, rtol=1e-5)
        finally:
            steer.conditioner.clear()


def test_condition_is_cleared_on_exit():
    steer = make_steerable()
    with steer.condition(WEIGHTS):
        pass
    assert steer.conditioner.conditioning_vectors is None


def test_save_load_round_trip(tmp_path, tokenizer):
    base_path = tmp_path / "base"
    demo.make_tiny_llama(seed=0).save_pretrained(base_path)
    steer = make_steerable(tokenizer=tokenizer)
    steer.model.peft_config["default"].base_model_name_or_path = str(base_path)
    steer.save_pretrained(tmp_path / "clp")
    loaded = SteerableModel.from_pretrained(str(tmp_path / "clp"))  # base model resolved from the metadata
    assert loaded.objective_names == ["a", "b"] and loaded.tokenizer is not None
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, steer(input_ids=input_ids).logits)


def test_building_and_loading_show_no_warning_about_peft_internals(tmp_path, tokenizer):
    """PEFT reads `is_gradient_checkpointing`, deprecated in transformers 5: users of `from_base_model` and
    `from_pretrained` (every `trl-clp evaluate`, `serve`, `export`) must not see that FutureWarning."""
    base_path = tmp_path / "base"
    demo.make_tiny_llama(seed=0).save_pretrained(base_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steer = make_steerable(tokenizer=tokenizer)
        steer.model.peft_config["default"].base_model_name_or_path = str(base_path)
        steer.save_pretrained(tmp_path / "clp")
        SteerableModel.from_pretrained(str(tmp_path / "clp"))
    assert not [str(w.message) for w in caught if "is_gradient_checkpointing" in str(w.message)]


def test_plain_peft_load_gives_the_uniform_weighting_not_the_sum(tmp_path):
    steer = make_steerable()
    steer.save_pretrained(tmp_path / "clp")
    plain = PeftModel.from_pretrained(demo.make_tiny_llama(seed=0), str(tmp_path / "clp")).eval()
    input_ids = batch()
    with torch.no_grad():
        plain_logits = plain(input_ids=input_ids).logits
        with steer.condition(torch.tensor([0.5, 0.5]), batch_size=3):
            uniform = steer(input_ids=input_ids).logits
        with steer.condition(torch.tensor([1.0, 0.0]), batch_size=3):
            first = steer(input_ids=input_ids).logits
    assert (plain_logits - uniform).abs().max() <= 1e-5
    assert (plain_logits - first).abs().max() > 1e-3


def test_loading_an_adapter_without_metadata_names_the_fix(tmp_path):
    steer = make_steerable()
    steer.model.save_pretrained(tmp_path / "plain")  # adapter only, no clp_config.json
    with pytest.raises(ValueError, match="clp_config.json"):
        SteerableModel.from_pretrained(str(tmp_path / "plain"), base_model=demo.make_tiny_llama())


def test_metadata_lists_objectives_and_conditioned_modules(tmp_path):
    steer = make_steerable("attn")
    steer.save_pretrained(tmp_path / "clp")
    saved = json.loads((tmp_path / "clp" / "clp_config.json").read_text())
    assert saved["objective_names"] == ["a", "b"] and saved["conditioning"] == "attn"
    assert len(saved["conditioned_modules"]) == 2 * 4  # 2 layers x 4 attention projections


def test_merge_returns_a_plain_transformers_model():
    merged = make_steerable().merge(torch.tensor([0.3, 0.7]))
    assert not isinstance(merged, PeftModel)
    assert type(merged).__name__ == "LlamaForCausalLM"


def test_merge_of_a_tied_output_layer_keeps_the_input_embeddings(tmp_path):
    """logit-CLP with `tie_word_embeddings=True` (as Qwen2.5): the merged output layer gets its own weight."""
    steer = make_steerable("logit", tied=True)
    embeddings = steer.model.get_input_embeddings().weight.detach().clone()
    assert steer.model.get_output_embeddings().base_layer.weight is steer.model.get_input_embeddings().weight
    weights = torch.tensor([0.3, 0.7])
    merged = steer.merge(weights).eval()
    torch.testing.assert_close(merged.get_input_embeddings().weight, embeddings, atol=0, rtol=0)
    assert not torch.equal(merged.get_output_embeddings().weight, embeddings)  # the conditioned LoRA is merged in
    assert torch.equal(steer.model.get_input_embeddings().weight, embeddings)  # the steerable model is untouched
    assert merged.config.tie_word_embeddings is False
    # The merged model is saved and reloaded as an untied model, equal to the conditioned one.
    merged.save_pretrained(tmp_path / "merged")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    input_ids = batch()
    with torch.no_grad(), steer.condition(weights, batch_size=3):
        expected = steer(input_ids=input_ids).logits
    with torch.no_grad():
        assert (merged(input_ids=input_ids).logits - expected).abs().max() <= 1e-5
        assert (reloaded(input_ids=input_ids).logits - expected).abs().max() <= 1e-5


def test_logit_variant_conditions_only_the_output_layer(tmp_path):
    steer = make_steerable("logit")
    assert steer.conditioning_config.conditioned_modules == ["base_model.model.lm_head"]
    assert steer.model.base_model.model.lm_head.r["default"] == 8
    assert steer.model.base_model.model.model.layers[0].self_attn.q_proj.r["default"] == 4  # shared LoRA
    steer.save_pretrained(tmp_path / "clp")
    from safetensors.torch import load_file

    saved = load_file(tmp_path / "clp" / "adapter_model.safetensors")
    assert any("lm_head.lora_A" in key for key in saved)
    assert not any("lm_head.base_layer" in key or key.endswith("lm_head.weight") for key in saved)
    loaded = SteerableModel.from_pretrained(str(tmp_path / "clp"), base_model=demo.make_tiny_llama(seed=0))
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, steer(input_ids=input_ids).logits)


def test_from_pretrained_resolves_a_hub_id_through_the_hub_cache(tmp_path, monkeypatch, tokenizer):
    """A hub id is fetched with huggingface_hub; offline, a populated cache serves it, base model included."""
    import huggingface_hub.constants

    cache = tmp_path / "hub"
    revision = "0" * 40

    def publish(repo_id, save):
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        save(repo / "snapshots" / revision)
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text(revision)

    publish(
        "trl-clp/tiny-base",
        lambda path: (demo.make_tiny_llama(seed=0).save_pretrained(path), tokenizer.save_pretrained(path)),
    )
    steer = make_steerable(tokenizer=tokenizer)
    steer.model.peft_config["default"].base_model_name_or_path = "trl-clp/tiny-base"
    publish("trl-clp/tiny-clp", steer.save_pretrained)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))

    loaded = SteerableModel.from_pretrained("trl-clp/tiny-clp")
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, steer(input_ids=input_ids).logits)


# ---------------------------------------------------------------------------------------------- the prompting variant


@pytest.mark.parametrize("chat", [False, True], ids=["text", "chat"])
def test_prompt_variant_builds_the_training_prompt_token_for_token(tmp_path, prompts_dataset, chat):
    tokenizer = bos_tokenizer()
    if chat:
        prompts_dataset = prompts_dataset.map(
            lambda row: {
                "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": row["prompt"]}]
            }
        )
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[lowercase_reward, uppercase_reward],
        # A template keyword (as Qwen3's `enable_thinking`): saved with the adapter, so inference templates alike.
        args=tiny_config(tmp_path, conditioning="prompt", chat_template_kwargs={"style": "brief"} if chat else None),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS),
    )
    prompts = [prompts_dataset[i]["prompt"] for i in range(3)]
    trained = training_prompt_ids(trainer, prompts, WEIGHTS)
    # The prompts training saw: one BOS, the weighting in front of the text or inside the first user message.
    assert all(ids[0] == tokenizer.bos_token_id and ids.count(tokenizer.bos_token_id) == 1 for ids in trained)
    decoded = tokenizer.decode(trained[1])
    assert ("<|user|>[weights: lowercase_reward=0.30" if chat else "<s>[weights: lowercase_reward=0.30") in decoded
    assert decoded.endswith("<|assistant|><|brief|>") == chat

    trainer.conditioning_config.save(str(tmp_path))
    saved = ConditioningConfig.load(str(tmp_path / "clp_config.json"))
    assert saved.chat_template_kwargs == ({"style": "brief"} if chat else None)
    steer = SteerableModel(trainer.model.eval(), saved, tokenizer)
    encoded = steer.tokenize_prompts(prompts, WEIGHTS)
    rows = zip(encoded["input_ids"], encoded["attention_mask"], strict=True)
    built = [ids[mask.bool()].tolist() for ids, mask in rows]
    assert built == trained

    greedy = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        expected = trainer.model.generate(**encoded, **greedy)[:, encoded["input_ids"].size(1) :]
    completions = tokenizer.batch_decode(expected, skip_special_tokens=True)
    assert steer.generate_from_prompts(prompts, WEIGHTS, **greedy) == completions
    if chat:  # chat-templated ids cannot be re-weighted faithfully: refused, pointing to the conversations path
        templated = tokenizer.apply_chat_template(
            prompts[:1], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with pytest.raises(ValueError, match="generate_from_prompts"):
            steer.generate(templated["input_ids"], weights=WEIGHTS[0], **greedy)
    else:  # the ids path (prompts tokenized with their BOS) generates from the training prompt too
        plain = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        out = steer.generate(**plain, weights=WEIGHTS, **greedy)
        assert torch.equal(out, torch.cat([encoded["input_ids"], expected], 1))


def test_returned_sequences_and_beams_set_in_a_generation_config_follow_their_rows():
    steer = make_steerable()
    input_ids = batch(length=5)
    config = GenerationConfig(num_beams=2, num_return_sequences=2, do_sample=False, max_new_tokens=6, pad_token_id=0)
    out = steer.generate(input_ids, weights=WEIGHTS, generation_config=config)
    assert out.size(0) == 2 * len(WEIGHTS)
    for row, weights in enumerate(WEIGHTS):
        expected = steer.merge(weights).eval().generate(input_ids[row : row + 1], generation_config=config)
        assert torch.equal(out[2 * row : 2 * row + 2], expected)
    assert not torch.equal(out[:2], out[4:])


# ---------------------------------------------------------------------------------------------- refused configurations


def test_lora_bias_is_refused_at_construction():
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_bias=True)
    with pytest.raises(ValueError, match="lora_bias"):
        SteerableModel.from_base_model(demo.make_tiny_llama(), ["a", "b"], lora)


def test_conditioned_target_modules_that_match_nothing_are_named():
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)
    with pytest.raises(ValueError, match=r"\['qkv_proj'\] match no LoRA layer.*'down_proj'"):
        SteerableModel.from_base_model(demo.make_tiny_llama(), ["a", "b"], lora, "attn", ["q_proj", "qkv_proj"])


def test_merge_conditions_only_the_active_adapter():
    steer = make_steerable()
    # A second adapter of another rank on the same layers: its lora_A has no blocks to scale.
    other = LoraConfig(r=3, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    steer.model.add_adapter("other", other)
    assert steer.model.active_adapter == "default"
    input_ids = batch()
    weights = torch.tensor([0.3, 0.7])
    other_a = steer.model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["other"].weight.detach().clone()
    with torch.no_grad():
        merged = steer.merge(weights).eval()(input_ids=input_ids).logits
        with steer.condition(weights, batch_size=3):
            expected = steer(input_ids=input_ids).logits
    assert (merged - expected).abs().max() <= 1e-5
    assert torch.equal(steer.model.base_model.model.model.layers[0].self_attn.q_proj.lora_A["other"].weight, other_a)


# ---------------------------------------------------------------------------------------------- loading from anywhere


def test_a_relative_base_path_loads_from_another_working_directory(tmp_path, monkeypatch, tokenizer):
    """The main job records its base model relative to where it ran (`outputs/clp-demo/base_model`)."""
    monkeypatch.chdir(tmp_path)
    demo.make_tiny_llama(seed=0).save_pretrained("outputs/clp-demo/base_model")
    steer = make_steerable(tokenizer=tokenizer)
    steer.model.peft_config["default"].base_model_name_or_path = "outputs/clp-demo/base_model"
    steer.model.save_pretrained("outputs/clp-demo")  # as the trainer saves: the relative path is kept
    steer.conditioning_config.save("outputs/clp-demo")
    assert json.loads((tmp_path / "outputs/clp-demo/adapter_config.json").read_text())["base_model_name_or_path"] == (
        "outputs/clp-demo/base_model"
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    loaded = SteerableModel.from_pretrained(str(tmp_path / "outputs/clp-demo"))
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        expected = steer(input_ids=input_ids).logits
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, expected)
    # Saved or exported again, the adapter records the base model's absolute path.
    loaded.save_pretrained("again")
    loaded.export_lora("export", torch.tensor([0.3, 0.7]))
    for folder in ("again", "export"):
        recorded = json.loads((elsewhere / folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert recorded == str(tmp_path / "outputs/clp-demo/base_model")
    monkeypatch.chdir(tmp_path)
    again = SteerableModel.from_pretrained(str(elsewhere / "again"))
    with torch.no_grad(), again.condition(WEIGHTS):
        torch.testing.assert_close(again(input_ids=input_ids).logits, expected)


def test_save_pretrained_records_an_absolute_base_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    demo.make_tiny_llama(seed=0).save_pretrained("base")
    steer = make_steerable()
    steer.model.peft_config["default"].base_model_name_or_path = "base"
    steer.save_pretrained("clp")
    steer.export_lora("export", torch.tensor([0.5, 0.5]))
    for folder in ("clp", "export"):
        recorded = json.loads((tmp_path / folder / "adapter_config.json").read_text())["base_model_name_or_path"]
        assert recorded == str(tmp_path / "base")
    monkeypatch.chdir(tmp_path.parent)
    loaded = SteerableModel.from_pretrained(str(tmp_path / "clp"))
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, steer(input_ids=input_ids).logits)


def test_an_adapter_of_an_in_memory_base_model_asks_for_base_model(tmp_path):
    steer = make_steerable()
    steer.model.peft_config["default"].base_model_name_or_path = None
    steer.save_pretrained(tmp_path / "clp")
    with pytest.raises(ValueError, match="base_model="):
        SteerableModel.from_pretrained(str(tmp_path / "clp"))
    loaded = SteerableModel.from_pretrained(str(tmp_path / "clp"), base_model=demo.make_tiny_llama(seed=0))
    input_ids = batch()
    with torch.no_grad(), steer.condition(WEIGHTS), loaded.condition(WEIGHTS):
        torch.testing.assert_close(loaded(input_ids=input_ids).logits, steer(input_ids=input_ids).logits)


@pytest.mark.parametrize("path", ["/no/such/clp-model", "./missing", "~/missing-clp-model", "runs/a/missing"])
def test_a_missing_local_folder_is_named(tmp_path, monkeypatch, path):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SteerableModel.from_pretrained(path)


def test_a_missing_recorded_base_folder_is_named(tmp_path):
    steer = make_steerable()
    steer.model.peft_config["default"].base_model_name_or_path = "runs/gone/base_model"
    steer.model.save_pretrained(tmp_path / "clp")
    steer.conditioning_config.save(tmp_path / "clp")
    with pytest.raises(
        FileNotFoundError, match="base model folder 'runs/gone/base_model' does not exist.*base_model="
    ):
        SteerableModel.from_pretrained(str(tmp_path / "clp"))


def test_renamed_names_still_work_with_a_future_warning():
    """`variant=`, `.variant`, `set_weights` and `.weights` act as their new names, each warning with the new name."""
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, init_lora_weights=False)
    new = SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), ["a", "b"], lora, conditioning="attn")
    with pytest.warns(FutureWarning, match=r"renamed `conditioning=`"):
        old = SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), ["a", "b"], lora, variant="attn")
    assert old.conditioning_config == new.conditioning_config
    assert {name.split(".")[-1] for name in old.conditioning_config.conditioned_modules} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    }
    with pytest.warns(FutureWarning, match=r"renamed `conditioning`"):
        assert old.conditioning_config.variant == "attn"
    with pytest.raises(TypeError, match="pass `conditioning` only"):
        SteerableModel.from_base_model(demo.make_tiny_llama(seed=0), ["a", "b"], lora, "logit", variant="attn")

    vectors = torch.tensor([[0.3, 0.7]])
    with pytest.warns(FutureWarning, match=r"renamed `set_conditioning_vectors`"):
        old.conditioner.set_weights(vectors)
    try:
        assert old.conditioner.conditioning_vectors is vectors
        with pytest.warns(FutureWarning, match=r"renamed `conditioning_vectors`"):
            assert old.conditioner.weights is vectors
        with torch.no_grad():
            trained_path = old(input_ids=batch(rows=1)).logits
            expected = old.merge(vectors[0])(input_ids=batch(rows=1)).logits
        torch.testing.assert_close(trained_path, expected, atol=1e-5, rtol=1e-5)
    finally:
        old.conditioner.clear()
    assert old.conditioner.conditioning_vectors is None
