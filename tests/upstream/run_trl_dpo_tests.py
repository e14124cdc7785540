"""Run TRL's own DPO tests against `MultiObjectiveDPOTrainer` (upstream conformance), offline.

    git -C <a clone of huggingface/trl> show <commit>:tests/test_dpo_trainer.py > /tmp/upstream/test_dpo_trainer.py
    git -C <a clone of huggingface/trl> show <commit>:tests/testing_utils.py > /tmp/upstream/testing_utils.py
    OMP_NUM_THREADS=1 python tests/upstream/run_trl_dpo_tests.py /tmp/upstream/test_dpo_trainer.py [-- pytest args]

The two upstream files are copied, unchanged, into a temporary package and run by pytest with the plugin
`trl_dpo_shim` (next to this file), which substitutes our config and trainer for TRL's and tiny local models and
datasets for the hub's (see its docstring). Upstream code is never committed here. Tests that do not apply to a
conditioned LoRA trainer are deselected by name (`NOT_APPLICABLE`, reason next to each); tests whose last assertion
is that full fine-tuning moved every base parameter are expected to fail on exactly that assertion
(`FROZEN_BASE_ASSERTIONS`). Everything else must pass. See docs/preference.md, "Upstream conformance".
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
PACKAGE = "trl_upstream"  # the temporary package holding the upstream files (`from .testing_utils import ...`)
FILE = f"{PACKAGE}/test_dpo_trainer.py"

_LOSS = (
    "CLP mixes one signed-pair loss over the objectives: only 'sigmoid', 'hinge' and 'ipo' (the config refuses others)"
)
_PEFT_MODEL = (
    "CLP builds its own conditioned adapter: a ready `PeftModel` is refused (pass the base and a `peft_config`)"
)
_REF_MODEL = "the reference is the adapter-free base; there is no `ref_model` argument and no reference syncing"
_VLM = "text-only trainer: vision-language models and image data are refused"
_TARGET_PARAMETERS = "`target_parameters` (LoRA on MoE expert tensors) is not a linear LoRA the blocks can mix"
_HUB = "needs a hub artefact that cannot be rebuilt offline"

# Test id (relative to the upstream file) -> why it does not apply to `MultiObjectiveDPOTrainer`.
NOT_APPLICABLE = {
    **{
        f"TestDPOTrainer::test_train_loss_types[{loss}]": _LOSS
        for loss in (
            "exo_pair",
            "nca_pair",
            "robust",
            "bco_pair",
            "sppo_hard",
            "aot",
            "aot_unpaired",
            "apo_zero",
            "apo_down",
            "discopop",
            "sft",
            "sigmoid_norm",
        )  # fmt: skip
    },
    "TestDPOTrainer::test_train_multi_loss_types": _LOSS,
    "TestDPOTrainer::test_train_with_wpo": "`use_weighting` (WPO) reweights pairs by policy probability; refused",
    "TestDPOTrainer::test_train_with_ld": "`ld_alpha` (LD-DPO) is refused: the pair loss is the standard DPO margin",
    **{
        f"TestDPOTrainer::test_train_with_f_divergence[{divergence}]": "only `f_divergence_type='reverse_kl'` (refused)"
        for divergence in ("forward_kl", "js_divergence", "alpha_divergence")
    },
    "TestDPOTrainer::test_evaluate_precompute_ref_log_probs_after_training_raises": "TRL refuses to precompute the "
    "reference for a new eval dataset after full fine-tuning; CLP's reference (the adapter-free base) is always "
    "available, as for TRL with PEFT, so evaluating works and nothing is raised",
    "TestDPOTrainer::test_train[trl-internal-testing/tiny-NemotronHForCausalLM-nano]": "CLP always trains a LoRA, and "
    "PEFT refuses LoRA on the Mamba layers' `out_proj`/`conv1d` that the default 'all-linear' targets select (pass a "
    "`peft_config` naming other modules); the test trains with no `peft_config`",
    "TestDPOTrainer::test_train_with_explicit_ref_model": _REF_MODEL,
    "TestDPOTrainer::test_train_with_sync_ref_model": _REF_MODEL,
    "TestDPOTrainer::test_train_peft_model": _PEFT_MODEL,
    "TestDPOTrainer::test_train_moe_peft_model": _PEFT_MODEL,
    "TestDPOTrainer::test_train_moe_with_peft_config": _TARGET_PARAMETERS,
    "TestDPOTrainer::test_trust_remote_code": f"{_HUB}: a repository with custom modelling code",
    "TestDPOTrainer::test_train_gpt_oss": f"{_HUB}: GPT-OSS's harmony chat template and the `harmony` dataset",
    "TestDPOTrainer::test_train_toolcall_data": f"{_HUB}: a tool-calling chat template and the `toolcall` dataset",
    # Version skew: fails the same way with TRL 1.16's own DPOTrainer on the same models (`--plain-trl`).
    "TestDPOTrainer::test_peft_with_quantization": "version skew: with TRL's own trainer too, bitsandbytes on CPU "
    "changes base-layer biases that the upstream test exempts only for its hub model's layer 1",
    "TestDPOTrainerVLM": _VLM,
    "TestDataCollatorForVisionPreference": _VLM,
    "TestDPOTrainerSlow": _VLM,
}

# Tests that end by asserting that EVERY parameter of `trainer.model` moved (full fine-tuning). CLP always trains a
# LoRA adapter on a frozen base, so they fail on the first base parameter, by design; the shim requires the failure
# to be exactly that assertion, on a base-model parameter. That the adapter does train, and the base does not, is
# what the upstream PEFT tests assert, and they must pass.
FROZEN_BASE_ASSERTIONS = [
    "TestDPOTrainer::test_train",
    "TestDPOTrainer::test_train_dataset_format",
    "TestDPOTrainer::test_train_model",
    "TestDPOTrainer::test_train_loss_types",
    "TestDPOTrainer::test_train_with_f_divergence[reverse_kl]",
    "TestDPOTrainer::test_train_model_dtype",
    "TestDPOTrainer::test_train_with_iterable_dataset",
    "TestDPOTrainer::test_train_padding_free",
    "TestDPOTrainer::test_train_with_chat_template_kwargs",
    "TestDPOTrainer::test_train_with_gradient_checkpointing",
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream_file", help="TRL's tests/test_dpo_trainer.py, with tests/testing_utils.py beside it")
    parser.add_argument(
        "--plain-trl",
        action="store_true",
        help="run TRL's own DPOTrainer on the same local models and data (nothing deselected): a test that fails "
        "there too fails for version skew, not because of our trainer",
    )
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, after `--` (e.g. -- -k test_train)")
    args = parser.parse_args(argv)
    upstream_dir = os.path.dirname(os.path.abspath(args.upstream_file))
    utils = os.path.join(upstream_dir, "testing_utils.py")
    if not os.path.isfile(utils):
        raise SystemExit(f"{utils} is missing: save TRL's tests/testing_utils.py beside the test file (same commit).")

    with tempfile.TemporaryDirectory(prefix="trl-dpo-conformance-") as root:
        package = os.path.join(root, PACKAGE)
        os.makedirs(package)
        open(os.path.join(package, "__init__.py"), "w").close()
        shutil.copy(args.upstream_file, os.path.join(package, "test_dpo_trainer.py"))
        shutil.copy(utils, package)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([HERE, REPO, os.environ.get("PYTHONPATH", "")]),
            "HF_HUB_OFFLINE": "1",  # the shim builds every model and dataset the applicable tests load
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "TRL_DPO_SHIM_PLAIN_TRL": "1" if args.plain_trl else "0",
        }
        command = [
            sys.executable, "-m", "pytest", FILE, "-p", "trl_dpo_shim", "-p", "no:cacheprovider", "--rootdir", root,
            "-q", "-rfEsxX", "-W", "ignore::FutureWarning", *args.pytest_args,
        ]  # fmt: skip
        # cwd=root: a trainer given no `args` writes its default output directory there.
        return subprocess.call(command, cwd=root, env=env)


if __name__ == "__main__":
    sys.exit(main())
