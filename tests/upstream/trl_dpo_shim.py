"""A pytest plugin that runs TRL's own `tests/test_dpo_trainer.py` against `MultiObjectiveDPOTrainer`, offline.

Loaded by `run_trl_dpo_tests.py` (`pytest -p trl_dpo_shim`) before the upstream file is imported, it changes what
the upstream names resolve to, never the upstream text:

- `trl.DPOConfig` / `trl.DPOTrainer` become `ConformanceDPOConfig` / `ConformanceDPOTrainer`: our config and trainer
  with the upstream data read as ONE preference signal. `objective_names` must name at least two objectives, so the
  shim names two, `("preferred", "preferred_too")`, and labels every pair `[+1, +1]`: both objectives prefer
  `chosen`, so for every weighting w the mixed loss Σ_i w_i·ℓ(z) / Σ_i w_i is ℓ(z), TRL's DPO loss of the pair.
- `from_pretrained` of the transformers classes maps the hub ids of `trl-internal-testing/tiny-*` causal LMs to tiny
  models of the same architecture, built from a config with random weights and saved to a temporary directory, with
  the demo's byte tokenizer and a ChatML-style chat template (ids of any other hub repository raise at once).
- `datasets.load_dataset("trl-internal-testing/zen", config)` returns locally generated datasets with the columns
  of the hub's (standard/conversational, explicit/implicit prompt, paired/unpaired; `train` and `test` splits).
- No accelerator: every config gets `use_cpu=True`, as TRL's own `tests/conftest.py` does.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass, field

import datasets
import pytest
import torch
import transformers
import trl
from run_trl_dpo_tests import FROZEN_BASE_ASSERTIONS, NOT_APPLICABLE
from trl import import_utils as trl_import_utils

from trl_clp import MultiObjectiveDPOConfig, MultiObjectiveDPOTrainer, demo

OBJECTIVES = ("preferred", "preferred_too")
LABELS = [1] * len(OBJECTIVES)  # every objective prefers `chosen`: the mixed loss is DPO's for any weighting

CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# ---------------------------------------------------------------- tiny models

# The byte tokenizer's ids: 256 bytes plus <pad>=0, <s>=1, </s>=2.
_IDS = {"vocab_size": 259, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
_SMALL = {"hidden_size": 8, "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 32}

# Hub id -> (config class, tiny config values): the architecture the id names, at the sizes of TRL's own tiny models
# (`scripts/generate_tiny_models/`), with the byte tokenizer's vocabulary.
TINY_CAUSAL_LMS = {
    "trl-internal-testing/tiny-Qwen2ForCausalLM-2.5": ("Qwen2Config", {**_SMALL, "num_hidden_layers": 2}),
    "trl-internal-testing/tiny-Cohere2ForCausalLM": (
        "Cohere2Config",
        {**_SMALL, "num_hidden_layers": 2, "layer_types": ["sliding_attention", "full_attention"]},
    ),
    "trl-internal-testing/tiny-Glm4MoeForCausalLM": (
        "Glm4MoeConfig",
        {
            **_SMALL,
            "num_hidden_layers": 2,
            "moe_intermediate_size": 32,
            "head_dim": 2,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "first_k_dense_replace": 1,
        },
    ),  # fmt: skip
    "trl-internal-testing/tiny-GptOssForCausalLM": (
        "GptOssConfig",
        {**_SMALL, "num_hidden_layers": 2, "num_local_experts": 4, "num_experts_per_tok": 2},
    ),
    "trl-internal-testing/tiny-Qwen3MoeForCausalLM": (
        "Qwen3MoeConfig",
        {**_SMALL, "num_hidden_layers": 2, "num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32},
    ),
    "trl-internal-testing/tiny-NemotronHForCausalLM-nano": (
        "NemotronHConfig",
        {
            **_SMALL,
            "hidden_size": 16,
            "layers_block_type": ["mamba", "attention", "moe"],
            "mamba_num_heads": 8,
            "mamba_head_dim": 4,
            "mamba_n_groups": 1,
            "ssm_state_size": 16,
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "moe_shared_expert_intermediate_size": 32,
            "use_mamba_kernels": False,
        },
    ),  # fmt: skip
    "trl-internal-testing/tiny-Olmo3ForCausalLM": ("Olmo3Config", {**_SMALL, "num_hidden_layers": 2}),
    "trl-internal-testing/tiny-Lfm2ForCausalLM": (
        "Lfm2Config",
        {**_SMALL, "num_hidden_layers": 2, "full_attn_idxs": [1], "block_multiple_of": 8},
    ),
    "trl-internal-testing/tiny-Lfm2ForCausalLM-2.5": (
        "Lfm2Config",
        {
            **_SMALL,
            "num_hidden_layers": 2,
            "layer_types": ["conv", "full_attention"],
            "block_auto_adjust_ff_dim": False,
        },
    ),
}

_MODEL_DIR = tempfile.mkdtemp(prefix="trl-dpo-conformance-models-")


def byte_tokenizer():
    """The demo's byte tokenizer (259 ids) with a ChatML-style chat template."""
    tokenizer = demo.make_byte_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


@functools.cache
def local_model_path(model_id: str) -> str:
    """The directory of the tiny stand-in for `model_id` (built and saved on first use)."""
    config_name, values = TINY_CAUSAL_LMS[model_id]
    config = getattr(transformers, config_name)(**values, **_IDS)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    path = os.path.join(_MODEL_DIR, model_id.split("/")[-1])
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def resolve(name_or_path):
    """A local path for a hub id of `TINY_CAUSAL_LMS`; other hub ids of the test org raise (no network)."""
    if not isinstance(name_or_path, str) or not name_or_path.startswith("trl-internal-testing/"):
        return name_or_path
    if name_or_path not in TINY_CAUSAL_LMS:
        raise OSError(f"trl_dpo_shim: no local stand-in for the hub repository {name_or_path!r}.")
    return local_model_path(name_or_path)


def _map_model_ids(cls) -> None:
    original = cls.from_pretrained.__func__

    @functools.wraps(original)
    def from_pretrained(klass, pretrained_model_name_or_path, *args, **kwargs):
        return original(klass, resolve(pretrained_model_name_or_path), *args, **kwargs)

    cls.from_pretrained = classmethod(from_pretrained)


for _cls in (
    transformers.PreTrainedModel,
    transformers.models.auto.auto_factory._BaseAutoModelClass,
    transformers.AutoConfig,
    transformers.PretrainedConfig,
    transformers.AutoTokenizer,
    transformers.PreTrainedTokenizerBase,
    transformers.AutoProcessor,
    transformers.ProcessorMixin,
):
    _map_model_ids(_cls)

# ---------------------------------------------------------------- the zen datasets

# (prompt, chosen, rejected): short texts in the spirit of the hub's "zen" data.
_PAIRS = [
    ("Beautiful is better than", " ugly.", " the sea."),
    ("Explicit is", " better than implicit.", " a pear."),
    ("Simple is better", " than complex.", " than nothing at all."),
    ("Complex is", " better than complicated.", " a red door."),
    ("Flat is better than", " nested.", " a hill."),
    ("Sparse is better", " than dense.", " with jam."),
    ("Readability", " counts.", " sleeps."),
    ("Special cases aren't special enough", " to break the rules.", " to paint."),
    ("Although practicality", " beats purity.", " eats soup."),
    ("Errors should never", " pass silently.", " be green."),
    ("Unless explicitly", " silenced.", " purple."),
    ("In the face of ambiguity,", " refuse the temptation to guess.", " buy a boat."),
    ("There should be one", " obvious way to do it.", " cat in the hat."),
    ("Although that way may not be", " obvious at first.", " a turnip."),
    ("Now is", " better than never.", " a tuesday."),
    ("Although never is often", " better than right now.", " a song."),
    ("If the implementation is hard to explain,", " it's a bad idea.", " smile."),
    ("If the implementation is easy to explain,", " it may be a good idea.", " it rains."),
    ("Namespaces are", " one honking great idea.", " blue cheese."),
]
_TEST_SIZE = 2  # the last pairs, as the hub's 10% test split of 19 rows


def _user(text):
    return [{"role": "user", "content": text}]


def _assistant(text):
    return [{"role": "assistant", "content": text.strip()}]


def _zen_columns(config_name: str) -> dict[str, list]:
    prompts, chosen, rejected = (list(column) for column in zip(*_PAIRS, strict=True))
    if config_name == "standard_preference":
        return {"prompt": prompts, "chosen": chosen, "rejected": rejected}
    if config_name == "standard_implicit_prompt_preference":
        return {
            "chosen": [p + c for p, c, _ in _PAIRS],
            "rejected": [p + r for p, _, r in _PAIRS],
        }
    if config_name == "standard_unpaired_preference":
        return {"prompt": prompts, "completion": chosen, "label": [i % 2 == 0 for i in range(len(prompts))]}
    if config_name == "conversational_preference":
        return {
            "prompt": [_user(p) for p in prompts],
            "chosen": [_assistant(c) for c in chosen],
            "rejected": [_assistant(r) for r in rejected],
        }
    if config_name == "conversational_implicit_prompt_preference":
        return {
            "chosen": [_user(p) + _assistant(c) for p, c, _ in _PAIRS],
            "rejected": [_user(p) + _assistant(r) for p, _, r in _PAIRS],
        }
    raise ValueError(f"trl_dpo_shim: no local stand-in for the zen configuration {config_name!r}.")


_load_dataset = datasets.load_dataset


@functools.wraps(_load_dataset)
def load_dataset(path, name=None, *, split=None, streaming=False, **kwargs):
    """`datasets.load_dataset`, with the hub's `trl-internal-testing/zen` generated locally."""
    if path != "trl-internal-testing/zen":
        if path.startswith("trl-internal-testing/"):
            raise OSError(f"trl_dpo_shim: no local stand-in for the hub dataset {path!r}.")
        return _load_dataset(path, name, split=split, streaming=streaming, **kwargs)
    full = datasets.Dataset.from_dict(_zen_columns(name))
    splits = datasets.DatasetDict(
        train=full.select(range(len(full) - _TEST_SIZE)), test=full.select(range(len(full) - _TEST_SIZE, len(full)))
    )
    if streaming:
        splits = datasets.IterableDatasetDict({key: value.to_iterable_dataset() for key, value in splits.items()})
    return splits if split is None else splits[split]


datasets.load_dataset = load_dataset

# ---------------------------------------------------------------- config and trainer


def with_preference_labels(dataset):
    """`dataset` (a dataset, an iterable one, or a dict of them) with `objective_labels` = [+1, +1] on every pair."""
    if dataset is None or isinstance(dataset, str):  # a str names an eval dataset prepared at init
        return dataset
    if isinstance(dataset, dict):  # also DatasetDict and IterableDatasetDict
        return type(dataset)({key: with_preference_labels(value) for key, value in dataset.items()})
    if dataset.column_names is not None and "objective_labels" in dataset.column_names:
        return dataset
    if isinstance(dataset, datasets.Dataset):
        return dataset.add_column("objective_labels", [LABELS] * len(dataset))
    return dataset.map(lambda row: {"objective_labels": LABELS})


@dataclass
class ConformanceDPOConfig(MultiObjectiveDPOConfig):
    """`MultiObjectiveDPOConfig` naming the two objectives of the upstream data's one preference signal."""

    objective_names: list[str] | None = field(default_factory=lambda: list(OBJECTIVES))

    def __post_init__(self):
        if not torch.cuda.is_available():  # as TRL's tests/conftest.py: bf16 defaults on, CPU must be explicit
            self.use_cpu = True
        super().__post_init__()


class ConformanceDPOTrainer(MultiObjectiveDPOTrainer):
    """`MultiObjectiveDPOTrainer` taking the upstream tests' datasets: every pair labelled `[+1, +1]`."""

    config_class = ConformanceDPOConfig

    def __init__(self, model, *args, train_dataset=None, eval_dataset=None, **kwargs):
        super().__init__(
            resolve(model),
            *args,
            train_dataset=with_preference_labels(train_dataset),
            eval_dataset=with_preference_labels(eval_dataset),
            **kwargs,
        )

    def evaluate(self, eval_dataset=None, *args, **kwargs):
        return super().evaluate(with_preference_labels(eval_dataset), *args, **kwargs)


@dataclass
class CPUDPOConfig(trl.DPOConfig):
    """TRL's own `DPOConfig`, with `use_cpu=True` when there is no accelerator (for `--plain-trl` runs)."""

    def __post_init__(self):
        if not torch.cuda.is_available():
            self.use_cpu = True
        super().__post_init__()


# `--plain-trl` (the runner): TRL's own trainer on the same local models and data, to tell version skew (the test
# fails with TRL too) from our bugs.
PLAIN_TRL = os.environ.get("TRL_DPO_SHIM_PLAIN_TRL") == "1"
if PLAIN_TRL:
    trl.DPOConfig = CPUDPOConfig
else:
    trl.DPOConfig = ConformanceDPOConfig
    trl.DPOTrainer = ConformanceDPOTrainer

# Version skew: the upstream `tests/testing_utils.py` imports a helper that TRL 1.16's `trl.import_utils` lacks.
if not hasattr(trl_import_utils, "is_joblib_available"):
    trl_import_utils.is_joblib_available = lambda: importlib.util.find_spec("joblib") is not None

# ---------------------------------------------------------------- selection and reporting


def _test_id(item) -> str:
    return item.nodeid.split("::", 1)[1]  # e.g. "TestDPOTrainer::test_train[trl-internal-testing/tiny-...]"


def matches(test_id: str, name: str) -> bool:
    """Whether `name` (a class, a test function, or one parametrized case) names the test `test_id`."""
    return test_id == name or test_id.startswith((f"{name}::", f"{name}["))


def _reason(test_id: str, table) -> str | None:
    return next((table[name] for name in table if matches(test_id, name)), None)


_not_applicable: dict[str, str] = {}
_FROZEN_BASE_REASON = "asserts that full fine-tuning moved every base parameter; CLP trains a LoRA on a frozen base"
_FROZEN_BASE_FAILURE = re.compile(r"Parameter (base_model\.model\.\S+) has not changed")


def pytest_collection_modifyitems(config, items):
    if PLAIN_TRL:
        return
    kept = []
    for item in items:
        reason = _reason(_test_id(item), NOT_APPLICABLE)
        if reason is None:
            kept.append(item)
        else:
            _not_applicable[_test_id(item)] = reason
    config.hook.pytest_deselected(items=[item for item in items if _test_id(item) in _not_applicable])
    items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    report = (yield).get_result()
    if PLAIN_TRL or call.when != "call" or not any(matches(_test_id(item), name) for name in FROZEN_BASE_ASSERTIONS):
        return
    if report.passed:  # the base moved: CLP's base must stay frozen
        report.outcome = "failed"
        report.longrepr = f"{_test_id(item)} passed: every base parameter moved, but CLP must keep the base frozen."
        return
    failure = (
        _FROZEN_BASE_FAILURE.search(str(call.excinfo.value)) if call.excinfo.errisinstance(AssertionError) else None
    )
    if failure is not None and "lora" not in failure.group(1):  # exactly the full fine-tuning assertion
        report.outcome = "skipped"
        report.wasxfail = _FROZEN_BASE_REASON


def pytest_terminal_summary(terminalreporter):
    if _not_applicable:
        terminalreporter.section(f"not applicable to MultiObjectiveDPOTrainer ({len(_not_applicable)}, deselected)")
        for test_id, reason in _not_applicable.items():
            terminalreporter.line(f"{test_id}: {reason}")
