"""Trackers get per-objective rewards and weighting histograms; push_to_hub uploads a card that shows how to steer."""

import pytest
from peft import LoraConfig

from trl_clp import MultiObjectiveTrainer, demo
from trl_clp.evaluation import Front, WeightingResult
from trl_clp.rewards import lowercase_reward, uppercase_reward

from .conftest import tiny_config


def make_trainer(tmp_path, tokenizer, prompts_dataset, model=None, **overrides):
    return MultiObjectiveTrainer(
        model=model if model is not None else demo.make_tiny_llama(seed=0),
        reward_funcs=[lowercase_reward, uppercase_reward],
        args=tiny_config(tmp_path, **overrides),
        train_dataset=prompts_dataset,
        processing_class=tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )


def test_tensorboard_gets_objective_rewards_and_weighting_histograms(
    tmp_path, tokenizer, prompts_dataset, monkeypatch
):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "tb"))  # transformers 5's way to place the logs
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, max_steps=3, report_to=["tensorboard"])
    trainer.train()

    events = event_accumulator.EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    scalars, histograms = events.Tags()["scalars"], events.Tags()["histograms"]
    for name in ("lowercase_reward", "uppercase_reward"):
        assert f"train/rewards/{name}/mean" in scalars
        assert f"train/weights/{name}/mean" in scalars
        assert f"train/rewards/{name}/slope_vs_weight" in scalars
        assert f"train/weights/{name}" in histograms
        steps = events.Histograms(f"train/weights/{name}")
        assert [event.step for event in steps] == [1, 2, 3]
        # One value per generated row (8 per step), all in [0, 1].
        assert all(event.histogram_value.num == 8 for event in steps)
        assert all(0.0 <= event.histogram_value.min <= event.histogram_value.max <= 1.0 for event in steps)
    # The two objectives' weights of each row sum to one.
    low, up = (
        events.Histograms(f"train/weights/{n}")[0].histogram_value for n in ("lowercase_reward", "uppercase_reward")
    )
    assert low.sum + up.sum == pytest.approx(8.0, abs=1e-4)


class RecordingHubApi:
    def __init__(self):
        self.uploads = []

    def upload_folder(self, repo_id, folder_path, **kwargs):
        files = {}
        for path in __import__("pathlib").Path(folder_path).rglob("*"):
            if path.is_file():
                files[str(path.relative_to(folder_path))] = path.read_bytes()
        self.uploads.append({"repo_id": repo_id, "files": files, "ignore_patterns": kwargs.get("ignore_patterns")})
        return f"https://huggingface.co/{repo_id}"


def test_push_to_hub_uploads_the_adapter_metadata_and_a_card_with_the_front(
    tmp_path, tokenizer, prompts_dataset, saved_base_model, monkeypatch
):
    import transformers.trainer

    api = RecordingHubApi()
    monkeypatch.setattr(transformers.trainer, "hf_api", lambda: api)
    trainer = make_trainer(tmp_path, tokenizer, prompts_dataset, model=saved_base_model, max_steps=1)
    trainer.train()

    def result(weights, lower, upper, kl):
        rewards = {"lowercase_reward": lower, "uppercase_reward": upper}
        value = weights[0] * lower + weights[1] * upper
        return WeightingResult(
            weights,
            rewards,
            kl,
            value,
            64,
            {k: [v - 0.01, v + 0.01] for k, v in rewards.items()},
            [kl - 0.1, kl + 0.1],
            [value - 0.01, value + 0.01],
        )

    front = Front(
        ["lowercase_reward", "uppercase_reward"],
        0.0,
        [result([1.0, 0.0], 0.81, 0.05, 2.5), result([0.0, 1.0], 0.02, 0.9, 3.1)],
    )
    front.save(str(tmp_path / "out"))
    trainer.hub_model_id = "someone/clp-demo"  # what `init_hf_repo` sets; the hub itself is not reachable here
    trainer.push_to_hub()

    (upload,) = api.uploads
    assert upload["repo_id"] == "someone/clp-demo"
    files = upload["files"]
    assert {"adapter_config.json", "adapter_model.safetensors", "clp_config.json", "README.md"} <= set(files)
    card = files["README.md"].decode()
    assert "## Steering this model" in card
    assert 'SteerableModel.from_pretrained("someone/clp-demo")' in card
    assert "**lowercase_reward, uppercase_reward**" in card
    assert "| (1.00, 0.00) | 0.8100 | 0.0500 | 2.500 | 0.8100 |" in card
    assert "trl-clp" in card and "clp" in card  # tags
