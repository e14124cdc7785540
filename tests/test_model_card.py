"""The model card written with every save: it cites CLP, names the model and says how to steer it."""

import pytest

from tests.conftest import bos_tokenizer, tiny_config
from trl_clp import MultiObjectiveTrainer, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward


def make_trainer(tmp_path, model, tokenizer):
    return MultiObjectiveTrainer(
        model=model,
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(tmp_path),
        train_dataset=demo.make_prompt_dataset(16),
        processing_class=tokenizer,
    )


def test_save_model_writes_a_card_that_cites_clp_and_names_the_model(tmp_path, saved_base_model, tokenizer):
    trainer = make_trainer(tmp_path, saved_base_model, tokenizer)
    trainer.save_model()  # no training and no checkpoint: PEFT alone would leave its blank template here
    card = (tmp_path / "out" / "README.md").read_text()
    assert "# Model Card for out" in card and "Model Card for None" not in card
    assert "This model is a fine-tuned version of `base` (a local model)." in card
    assert "Cite CLP as:" in card and "@inproceedings{wang2024conditional," in card
    assert "Conditional Language Policy: A General Framework for Steerable Multi-Objective Finetuning" in card
    assert "ahmadian2024back" not in card  # RLOO is named as the optimiser, not cited as the method
    assert "Back to Basics" not in card and "(https://huggingface.co/papers/2402.14740)" in card
    # TRL's quick start (a pipeline, i.e. the uniform weighting) is replaced by the steering section.
    assert "## Quick start" not in card and "pipeline(" not in card
    assert card.count("## Steering this model") == 1
    assert f'SteerableModel.from_pretrained("{tmp_path / "out"}")' in card

    trainer.save_model(str(tmp_path / "elsewhere"))  # a second save, to another folder, gets the card too
    assert (tmp_path / "elsewhere" / "README.md").read_text().count("## Steering this model") == 1
    assert (tmp_path / "out" / "README.md").read_text().count("## Steering this model") == 1


def test_card_of_an_in_memory_base_model_says_so(tmp_path, tiny_model, tokenizer):
    make_trainer(tmp_path, tiny_model, tokenizer).save_model()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "fine-tuned version of a base model given in memory." in card and "[None]" not in card


def card_snippet(card: str) -> str:
    """The steering section's Python block."""
    section = card[card.index("## Steering this model") :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("\n```", start)]


@pytest.mark.parametrize(
    "prompts, template",
    [("text", False), ("conversations", True), ("text", True)],
    ids=["text-model", "chat-trained", "chat-template"],
)
def test_card_snippet_steers_text_or_a_conversation_as_the_model_was_trained(
    tmp_path, saved_base_model, prompts, template
):
    tokenizer = bos_tokenizer() if template else demo.make_byte_tokenizer()
    dataset = demo.make_prompt_dataset(16)
    if prompts == "conversations":
        dataset = dataset.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}]})
    trainer = MultiObjectiveTrainer(
        model=saved_base_model,
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(tmp_path),
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.save_model()
    snippet = card_snippet((tmp_path / "out" / "README.md").read_text())
    namespace = {}
    exec(snippet, namespace)  # the card's code runs as written against the saved model
    if template:  # a chat model: a conversation, templated by `generate_from_prompts` as in training
        assert "generate_from_prompts([conversation] * 2, weights" in snippet and "steer.tokenizer(" not in snippet
        assert namespace["conversation"] == [{"role": "user", "content": "Your prompt"}]
        assert len(namespace["completions"]) == 2 and all(isinstance(c, str) for c in namespace["completions"])
    else:
        assert 'steer.tokenizer(["Your prompt"] * 2' in snippet and "generate_from_prompts" not in snippet
        assert namespace["out"].shape[0] == 2
