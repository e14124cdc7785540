"""Faults: a failing reward function, a killed run, an output directory that cannot take the checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from peft import LoraConfig

from trl_clp import MultiObjectiveTrainer, SteerableModel, demo
from trl_clp.rewards import lowercase_reward, uppercase_reward
from trl_clp.trainer import RewardFunctionError

from .conftest import tiny_config
from .fault_run import KILL_AT_STEP, make_trainer, record_weightings


def flaky_judge(fail_from_call: int):
    """A reward function that works, then raises like a remote judge timing out."""
    calls = []

    def judge(completions, **kwargs):
        calls.append(1)
        if len(calls) >= fail_from_call:
            raise ConnectionError("the judge API timed out")
        return uppercase_reward(completions)

    return judge


def test_a_failing_reward_function_stops_training_naming_it_and_the_checkpoint_stays_usable(
    tmp_path, tokenizer, prompts_dataset, saved_base_model
):
    def make(judge):
        return MultiObjectiveTrainer(
            model=saved_base_model,
            reward_funcs=[lowercase_reward, judge],
            args=tiny_config(tmp_path, max_steps=4, save_strategy="steps", save_steps=2),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
            peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
        )

    trainer = make(flaky_judge(fail_from_call=4))  # steps 0-2 succeed, step 3 fails
    with pytest.raises(RewardFunctionError, match=r"'judge' raised ConnectionError: the judge API timed out") as error:
        trainer.train()
    assert "resume_from_checkpoint=True" in str(error.value)
    assert trainer.state.global_step == 3
    checkpoint = tmp_path / "out" / "checkpoint-2"
    steer = SteerableModel.from_pretrained(str(checkpoint), tokenizer=tokenizer)
    assert steer.objective_names == ["lowercase_reward", "judge"]

    fixed = make(flaky_judge(fail_from_call=10**6))
    fixed.train(resume_from_checkpoint=True)
    assert fixed.state.global_step == 4


def read_weightings(path) -> dict[int, list]:
    with open(path) as handle:
        return dict(map(json.loads, handle))


def test_a_killed_run_resumes_from_its_last_checkpoint_with_the_same_weighting_stream(tmp_path):
    killed_dir = tmp_path / "killed"
    killed_dir.mkdir()
    script = os.path.join(os.path.dirname(__file__), "fault_run.py")
    process = subprocess.Popen([sys.executable, script, str(killed_dir)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (killed_dir / "ready").exists():
        assert process.poll() is None, process.stderr.read()[-4000:]
        assert time.monotonic() < deadline, "the run never reached the step at which it is killed"
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    checkpoints = sorted(p.name for p in (killed_dir / "out").glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-2", "checkpoint-4"]
    resumed = make_trainer(str(killed_dir))
    record_weightings(resumed, str(tmp_path / "resumed.jsonl"))
    resumed.train(resume_from_checkpoint=True)

    uninterrupted_dir = tmp_path / "uninterrupted"
    uninterrupted = make_trainer(str(uninterrupted_dir))
    record_weightings(uninterrupted, str(tmp_path / "uninterrupted.jsonl"))
    uninterrupted.train()

    expected = read_weightings(tmp_path / "uninterrupted.jsonl")
    before_kill = read_weightings(killed_dir / "weightings.jsonl")
    after_resume = read_weightings(tmp_path / "resumed.jsonl")
    # Generations are keyed by the global step at which they ran: steps 0-4 ran, the run was killed after the 5th
    # update, checkpoint-4 holds 4 updates. Only the update since that checkpoint is redone.
    assert sorted(before_kill) == list(range(KILL_AT_STEP))
    assert sorted(after_resume) == [4, 5, 6, 7]
    assert all(before_kill[step] == expected[step] for step in before_kill)
    assert all(after_resume[step] == expected[step] for step in after_resume)


def test_an_unwritable_output_dir_fails_at_construction(tmp_path, tokenizer, prompts_dataset):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match=r"Cannot write to output_dir=.*a_file/out.*writable `output_dir`"):
        MultiObjectiveTrainer(
            model=demo.make_tiny_llama(seed=0),
            reward_funcs=[lowercase_reward, uppercase_reward],
            args=tiny_config(blocker),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
        )


def test_a_full_disk_fails_at_construction(tmp_path, tokenizer, prompts_dataset, monkeypatch):
    import shutil

    from trl_clp import guards

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(guards.shutil, "disk_usage", lambda path: usage._replace(free=100_000))

    def make(**overrides):
        return MultiObjectiveTrainer(
            model=demo.make_tiny_llama(seed=0),
            reward_funcs=[lowercase_reward, uppercase_reward],
            args=tiny_config(tmp_path, **overrides),
            train_dataset=prompts_dataset,
            processing_class=tokenizer,
        )

    with pytest.raises(ValueError, match=r"0\.1 MiB free, but saving needs about .* MiB.*Free some disk space"):
        make(save_strategy="steps", save_steps=10)
