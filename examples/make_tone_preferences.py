# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Preference pairs for DPO-CLP on the SmolLM2 tone task, sampled from the base model and labelled by the online
recipe's reward functions (`examples/configs/smollm2_tone.yaml`: positivity vs objectivity).

    python examples/make_tone_preferences.py --output_dir outputs/tone_preferences      # ~10 CPU-minutes, see below
    trl-clp train --config examples/configs/smollm2_tone_dpo.yaml

For every prompt of `examples/data/tone_prompts` (328 training, 72 held-out), `completions_per_prompt` completions
are sampled from the base model with the online recipe's sampling (temperature 0.8, full distribution, 24 new
tokens, the chat template), each is scored once by every reward function, and every two completions of a prompt
form a pair (`trl_clp.preference_sampling`). The pairs are written in both preference layouts, from the same
completions and the same scores:

    <output_dir>/labels/{train,test}.jsonl   prompt, chosen, rejected, objective_labels  (sign of each difference)
    <output_dir>/scores/{train,test}.jsonl   prompt, chosen, rejected, chosen_scores, rejected_scores
    <output_dir>/budget.json                 completions sampled and scorer calls, per split; pairs per layout

`test` holds the pairs of the held-out prompts (the online comparison's held-out prompts): `trl-clp train --trainer
dpo` scores them as its held-out preference accuracy. They are not training budget: `budget.json` counts the
training split's completions and scorer calls apart, the numbers to set against an online run's.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402
from trl import TrlParser  # noqa: E402

from trl_clp.gguf import check_not_gguf  # noqa: E402
from trl_clp.preference_layouts import SIGNAL_COLUMNS  # noqa: E402
from trl_clp.preference_sampling import pairs_from_reward_functions, sample_completions  # noqa: E402
from trl_clp.rewards import resolve_reward_function  # noqa: E402
from trl_clp.scripts import limit_cpu_threads  # noqa: E402


@dataclass
class TonePreferenceArguments:
    model_name_or_path: str = field(
        default="models/smollm2-135m-instruct",
        metadata={"help": "The base model the pairs are sampled from (the policy DPO starts from)."},
    )
    dataset_name: str = field(
        default="examples/data/tone_prompts", metadata={"help": "Prompts: a folder with train.jsonl and test.jsonl."}
    )
    reward_funcs: list[str] = field(
        default_factory=lambda: ["sentiment", "objectivity"],
        metadata={"help": "One reward function per objective (names as in `trl-clp train --reward_funcs`)."},
    )
    objective_names: list[str] = field(
        default_factory=lambda: ["positivity", "objectivity"],
        metadata={"help": "One name per reward function: the recipe's `objective_names`."},
    )
    output_dir: str = field(default="outputs/tone_preferences", metadata={"help": "Where the dataset is written."})
    completions_per_prompt: int = field(default=2, metadata={"help": "k ≥ 2: every two of them form a pair."})
    max_new_tokens: int = field(default=24, metadata={"help": "As the online recipe's max_completion_length."})
    temperature: float = field(default=0.8, metadata={"help": "As the online recipe's."})
    top_k: int = field(default=0, metadata={"help": "0 keeps every token (TRL's default)."})
    top_p: float = field(default=1.0, metadata={"help": "1.0 keeps every token (TRL's default)."})
    tie_tolerance: float = field(default=0.0, metadata={"help": "Reward differences at most this large are ties."})
    num_train_prompts: int | None = field(default=None, metadata={"help": "The first N training prompts (all)."})
    num_test_prompts: int | None = field(default=None, metadata={"help": "The first N held-out prompts (all)."})
    batch_size: int = field(default=64, metadata={"help": "Rows per generate call."})
    seed: int = field(default=0, metadata={"help": "Sampling seed (the held-out split uses seed + 1)."})


class CountedReward:
    """A reward function that counts the completions it scores and scores each (prompt, completion) once: the second
    layout reads the scores of the first, and the count is the scorer calls the dataset cost (one per completion
    and reward function)."""

    def __init__(self, reward_func):
        self.reward_func = reward_func
        self.__name__ = getattr(reward_func, "__name__", type(reward_func).__name__)
        self.calls = 0
        self.scores: dict[str, float | None] = {}

    def __call__(self, prompts, completions, **kwargs) -> list[float | None]:
        keys = [json.dumps([p, c]) for p, c in zip(prompts, completions, strict=True)]
        new = [i for i, key in enumerate(keys) if key not in self.scores]
        if new:
            columns = {name: [values[i] for i in new] for name, values in kwargs.items()}
            values = self.reward_func(
                prompts=[prompts[i] for i in new], completions=[completions[i] for i in new], **columns
            )
            self.scores.update(zip([keys[i] for i in new], values, strict=True))
            self.calls += len(new)
        return [self.scores[key] for key in keys]


def make_split(model, tokenizer, prompts: list, rewards: list[CountedReward], args, seed: int) -> dict:
    """Sample and score one split; its pairs in both layouts and what they cost."""
    calls_before = sum(reward.calls for reward in rewards)
    started = time.perf_counter()
    completions, completion_ids = sample_completions(
        model,
        tokenizer,
        prompts,
        num_completions=args.completions_per_prompt,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=seed,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
    )
    sampled = time.perf_counter()
    pairs = {
        layout: pairs_from_reward_functions(
            prompts, completions, rewards, layout, args.tie_tolerance, completion_ids=completion_ids
        )
        for layout in SIGNAL_COLUMNS
    }
    k = args.completions_per_prompt
    possible = len(prompts) * k * (k - 1) // 2
    return {
        "pairs": pairs,
        "budget": {
            "prompts": len(prompts),
            "completions": len(prompts) * k,
            "completion_tokens": sum(len(ids) for group in completion_ids for ids in group),
            "scorer_calls": sum(reward.calls for reward in rewards) - calls_before,
            "pairs": {layout: len(split) for layout, split in pairs.items()},
            "pairs_dropped": {layout: possible - len(split) for layout, split in pairs.items()},
            "sampling_seconds": sampled - started,
            "scoring_seconds": time.perf_counter() - sampled,
        },
    }


def main(args: TonePreferenceArguments) -> dict:
    if len(args.objective_names) != len(args.reward_funcs):
        raise ValueError(
            f"{len(args.reward_funcs)} reward functions but {len(args.objective_names)} objective names: give one "
            "name per reward function, in the same order."
        )
    limit_cpu_threads()
    started = time.perf_counter()

    ################
    # Base model, prompts and scorers
    ################
    check_not_gguf(args.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(args.model_name_or_path, dtype=torch.float32).eval()
    prompts = load_dataset(args.dataset_name)
    limits = {"train": args.num_train_prompts, "test": args.num_test_prompts}
    rewards = [CountedReward(resolve_reward_function(spec)) for spec in args.reward_funcs]

    ################
    # Sample, score and pair each split
    ################
    splits = {}
    for offset, (split, limit) in enumerate(limits.items()):
        split_prompts = list(prompts[split]["prompt"])[:limit]
        splits[split] = make_split(model, tokenizer, split_prompts, rewards, args, seed=args.seed + offset)
        print(f"{split}: {json.dumps(splits[split]['budget'])}", flush=True)

    ################
    # Write both layouts and the budget
    ################
    for layout in SIGNAL_COLUMNS:
        os.makedirs(os.path.join(args.output_dir, layout), exist_ok=True)
        for split, made in splits.items():
            made["pairs"][layout].to_json(os.path.join(args.output_dir, layout, f"{split}.jsonl"))
    budget = {
        "arguments": asdict(args),
        # the objectives in the order of `objective_labels` and of the scores
        "objective_names": list(args.objective_names),
        "splits": {split: made["budget"] for split, made in splits.items()},
        "seconds": time.perf_counter() - started,
    }
    with open(os.path.join(args.output_dir, "budget.json"), "w") as handle:
        json.dump(budget, handle, indent=2)
    train = budget["splits"]["train"]
    print(
        f"Wrote {args.output_dir}/{{labels,scores}}/{{train,test}}.jsonl in {budget['seconds']:.0f} s. Training "
        f"budget: {train['completions']} completions sampled, {train['scorer_calls']} scorer calls, "
        f"{train['pairs']['labels']} pairs (labels), {train['pairs']['scores']} (scores)."
    )
    return budget


if __name__ == "__main__":
    (preference_args,) = TrlParser(TonePreferenceArguments).parse_args_and_config()
    main(preference_args)
