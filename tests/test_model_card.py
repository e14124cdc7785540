"""The model card written with every save: it cites CLP, names the model and says how to steer it."""

from tests.conftest import tiny_config
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
