"""ROUGE, NLI and reward-model objectives: TRL's signature, offline, with tiny local models."""

import pytest
import torch
from transformers import BertForSequenceClassification, BertTokenizerFast, LlamaConfig, LlamaForSequenceClassification

from trl_clp import MultiObjectiveTrainer, demo
from trl_clp.rewards import NLIReward, RewardModelObjective, RougeReward, resolve_reward_function, uppercase_reward

from .conftest import tiny_config


def test_rouge_l_matches_the_hand_computed_f_measure():
    rouge = RougeReward(reference_column="summary", rouge_type="rougeL")
    # LCS("the cat sat", "the cat sat on the mat") = 3 words: P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3.
    scores = rouge(prompts=["p", "p"], completions=["the cat sat", "dog"], summary=["the cat sat on the mat"] * 2)
    assert scores == pytest.approx([2 / 3, 0.0])
    assert rouge.__name__ == "rougeL"


def test_rouge_without_its_reference_column_names_the_column():
    rouge = RougeReward(reference_column="summary")
    with pytest.raises(KeyError, match=r"'summary'.*\['document'\]"):
        rouge(prompts=["p"], completions=["c"], document=["d"], trainer_state=None)


def test_nli_reward_is_the_batched_entailment_probability(nli_model_path):
    premises = ["the cat sat on the mat", "a dog ran in the park", "the cat ran", "a mat", "the dog sat"]
    hypotheses = ["the cat sat", "a dog ran", "the mat", "a cat", "in the park"]
    reward = NLIReward(nli_model_path, batch_size=2)
    scores = reward(prompts=premises, completions=hypotheses)

    model = BertForSequenceClassification.from_pretrained(nli_model_path).eval()
    tokenizer = BertTokenizerFast.from_pretrained(nli_model_path)
    with torch.no_grad():
        expected = model(**tokenizer(premises, hypotheses, return_tensors="pt", padding=True)).logits.softmax(-1)[:, 0]
    assert scores == pytest.approx(expected.tolist(), abs=1e-5)  # eval mode: dropout off, batches padded alike
    assert reward.model.device.type == "cpu" and reward.model.dtype == torch.float32  # half precision only on a GPU
    assert not any(p.requires_grad for p in reward.model.parameters())
    # The premise can come from a dataset column instead of the prompt.
    from_column = reward(prompts=["x"] * 5, completions=hypotheses, document=premises)
    assert from_column != scores
    assert NLIReward(nli_model_path, premise_column="document")(
        prompts=["x"] * 5, completions=hypotheses, document=premises
    ) == pytest.approx(scores, abs=1e-6)


def test_nli_reward_without_an_entailment_label_asks_for_it(nli_model_path):
    model = BertForSequenceClassification.from_pretrained(nli_model_path)
    model.config.id2label, model.config.label2id = {0: "A", 1: "B", 2: "C"}, {"A": 0, "B": 1, "C": 2}
    tokenizer = BertTokenizerFast.from_pretrained(nli_model_path)
    with pytest.raises(ValueError, match="entailment_label="):
        NLIReward(model, tokenizer=tokenizer)
    assert NLIReward(model, tokenizer=tokenizer, entailment_label="B").entailment_index == 1


@pytest.fixture
def reward_model_path(tmp_path, tokenizer):
    torch.manual_seed(0)
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
    path = tmp_path / "rm"
    LlamaForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def test_reward_model_objective_scores_prompt_and_completion(reward_model_path, tokenizer):
    objective = RewardModelObjective(reward_model_path, name="helpfulness", batch_size=2)
    prompts, completions = ["Tell me ", "Say ", "Hi "], ["a story", "nothing at all", "there"]
    scores = objective(prompts=prompts, completions=completions)

    model = LlamaForSequenceClassification.from_pretrained(reward_model_path).eval()
    with torch.no_grad():
        expected = [
            model(**tokenizer(p + c, return_tensors="pt")).logits[0, 0].item()
            for p, c in zip(prompts, completions, strict=True)
        ]
    assert scores == pytest.approx(expected, abs=1e-5)  # batching and padding change nothing


def test_reward_model_objective_is_a_named_objective_of_the_trainer(
    tmp_path, reward_model_path, tokenizer, prompts_dataset
):
    trainer = MultiObjectiveTrainer(
        model=demo.make_tiny_llama(seed=0),
        reward_funcs=[RewardModelObjective(reward_model_path, name="helpfulness"), uppercase_reward],
        args=tiny_config(tmp_path, max_steps=1),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
    )
    assert trainer.objective_names == ["helpfulness", "uppercase_reward"]
    trainer.train()
    assert "rewards/helpfulness/mean" in trainer.state.log_history[0]


def test_a_classifier_is_not_taken_as_a_reward_model(nli_model_path):
    with pytest.raises(ValueError, match="num_labels=3"):
        RewardModelObjective(nli_model_path, name="x")


def test_command_line_specs_build_the_rewards(nli_model_path):
    rouge = resolve_reward_function("rouge2", reference_column="summary")
    assert isinstance(rouge, RougeReward) and rouge.reference_column == "summary" and rouge.rouge_type == "rouge2"
    nli = resolve_reward_function("nli", nli_model=nli_model_path, premise_column="document")
    assert isinstance(nli, NLIReward) and nli.premise_column == "document"
    with pytest.raises(ValueError, match="nli_model"):
        resolve_reward_function("nli")


def test_reward_model_objective_leaves_the_callers_tokenizer_alone_and_keeps_the_end(reward_model_path, tokenizer):
    model = LlamaForSequenceClassification.from_pretrained(reward_model_path).eval()
    before = (tokenizer.truncation_side, tokenizer.padding_side, tokenizer.pad_token)
    objective = RewardModelObjective(model, name="helpfulness", tokenizer=tokenizer, batch_size=2, max_length=8)
    prompts, completions = ["Tell me ", "Say ", "Hi "], ["a long story about rivers", "nothing", "there you go"]
    scores = objective(prompts=prompts, completions=completions)
    # The policy's tokenizer, shared with the objective, still truncates on the right as before.
    assert (tokenizer.truncation_side, tokenizer.padding_side, tokenizer.pad_token) == before
    assert tokenizer.truncation_side == "right"
    assert tokenizer("abcdefghij", truncation=True, max_length=3)["input_ids"] == tokenizer("abc")["input_ids"]
    # Each text scored on its last 8 tokens (the byte tokenizer adds no special tokens).
    with torch.no_grad():
        expected = [
            model(input_ids=torch.tensor([tokenizer(p + c)["input_ids"][-8:]])).logits[0, 0].item()
            for p, c in zip(prompts, completions, strict=True)
        ]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(tokenizer(prompts[0] + completions[0])["input_ids"]) > 8  # truncation did happen
