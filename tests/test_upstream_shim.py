"""The upstream-conformance runner (`tests/upstream/`) on a made-up "upstream" test file: what its shim substitutes,
what it deselects, and which failures it accepts as the full fine-tuning assertion (TRL's own file is not in CI)."""

import re

import pytest

from .upstream import run_trl_dpo_tests

UPSTREAM_TESTS = """
import pytest
from datasets import load_dataset
from transformers import AutoTokenizer

from trl import DPOConfig, DPOTrainer

from .testing_utils import helper


class TestDPOTrainer:
    def test_shim_substitutes_our_trainer_models_and_data(self, tmp_path):
        dataset = load_dataset("trl-internal-testing/zen", "standard_preference", split="train")
        assert dataset.column_names == ["prompt", "chosen", "rejected"] and len(dataset) == 17
        conversational = load_dataset("trl-internal-testing/zen", "conversational_implicit_prompt_preference")
        assert conversational["test"][0]["chosen"][0]["role"] == "user"
        trainer = DPOTrainer(
            model="trl-internal-testing/tiny-Qwen2ForCausalLM-2.5",
            args=DPOConfig(output_dir=str(tmp_path), report_to="none"),
            train_dataset=dataset,
        )
        assert type(trainer).__mro__[1].__name__ == "MultiObjectiveDPOTrainer"
        assert type(trainer.model.base_model.model).__name__ == "Qwen2ForCausalLM"
        assert trainer.train_dataset["objective_labels"] == [[1, 1]] * 17
        tokenizer = AutoTokenizer.from_pretrained("trl-internal-testing/tiny-Qwen2ForCausalLM-2.5")
        assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).endswith("<|im_end|>\\n")
        assert helper() == 1

    def test_train_model(self):  # the full fine-tuning assertion: accepted
        assert False, "Parameter base_model.model.model.embed_tokens.weight has not changed."

    def test_train_with_gradient_checkpointing(self):  # another assertion in a listed test: a real failure
        assert False, "train_loss is missing"

    def test_train_with_wpo(self):  # not applicable: deselected
        raise RuntimeError("never run")


class TestDPOTrainerVLM:
    def test_anything(self):
        raise RuntimeError("never run")
"""


def test_runner_substitutes_deselects_and_accepts_only_the_frozen_base_assertion(tmp_path, capfd):
    (tmp_path / "test_dpo_trainer.py").write_text(UPSTREAM_TESTS)
    (tmp_path / "testing_utils.py").write_text("def helper():\n    return 1\n")
    code = run_trl_dpo_tests.main([str(tmp_path / "test_dpo_trainer.py")])
    output = capfd.readouterr().out
    assert code == 1, output  # the one real failure
    for count in ("1 failed", "1 passed", "2 deselected", "1 xfailed"):
        assert re.search(rf"\b{count}\b", output), output
    assert "FAILED trl_upstream/test_dpo_trainer.py::TestDPOTrainer::test_train_with_gradient_checkpointing" in output
    assert "TestDPOTrainer::test_train_with_wpo: `use_weighting` (WPO)" in output  # the reason, next to the name
    assert "TestDPOTrainerVLM::test_anything: text-only trainer" in output


def test_runner_asks_for_testing_utils_beside_the_file(tmp_path):
    (tmp_path / "test_dpo_trainer.py").write_text(UPSTREAM_TESTS)
    with pytest.raises(SystemExit, match="save TRL's tests/testing_utils.py beside the test file"):
        run_trl_dpo_tests.main([str(tmp_path / "test_dpo_trainer.py")])
