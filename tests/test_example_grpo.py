"""The main job with `--trainer grpo`: from flags and from a YAML recipe."""

import json
import os

from .conftest import toy_main_job_argv
from .test_example import EXAMPLES, train_clp  # noqa: F401 (fixture)


def test_main_job_trains_with_grpo(train_clp, tmp_path):  # noqa: F811
    out = tmp_path / "demo"
    argv = ["--trainer", "grpo", "--loss_type", "grpo", "--scalarization", "tchebycheff", *toy_main_job_argv(out)]
    assert train_clp.chosen_trainer(argv) == "grpo"
    script_args, training_args, model_args = train_clp.make_parser(trainer="grpo").parse_args_and_config(args=argv)
    assert type(training_args).__name__ == "MultiObjectiveGRPOConfig" and training_args.loss_type == "grpo"
    train_clp.main(script_args, training_args, model_args)
    saved = json.loads((out / "clp_config.json").read_text())
    assert saved["scalarization"]["method"] == "tchebycheff"
    assert (out / "front.json").is_file()


def test_grpo_recipe_parses(train_clp):  # noqa: F811
    path = os.path.join(EXAMPLES, "configs", "tldr_summarization_grpo.yaml")
    argv = ["--config", path, "--bf16", "False"]
    assert train_clp.chosen_trainer(argv) == "grpo"
    script_args, training_args, _ = train_clp.make_parser(trainer="grpo").parse_args_and_config(args=argv)
    assert script_args.trainer == "grpo" and training_args.loss_type == "dapo"
    assert training_args.conditioning == "attn" and training_args.objective_names == ["faithfulness", "rouge"]
