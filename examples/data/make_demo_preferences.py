# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Write the preference pairs of the offline DPO recipe (`examples/configs/dpo_demo.yaml`): the demo task's prompts
(`trl_clp.demo.make_prompt_dataset`), each with two answers that re-word it in different registers (lowercase,
UPPERCASE, Title Case), labelled per objective by the demo's two rewards (`trl_clp.rewards.lowercase_reward`,
`uppercase_reward`): the labels layout of `MultiObjectiveDPOTrainer`, with objectives `[lower, upper]`.

    python examples/data/make_demo_preferences.py    # writes examples/data/demo_preferences/{train,test}.jsonl

Each line is `{"prompt", "chosen", "rejected", "objective_labels"}`, the label of objective i being the sign of its
reward's difference (chosen − rejected): +1 it prefers `chosen`, −1 `rejected`. The two rewards conflict on every
character, so every pair is labelled [+1, −1] or [−1, +1]. The output is the same on every run (seeded).
"""

import json
import os
import random

from trl_clp import demo
from trl_clp.rewards import lowercase_reward, uppercase_reward

OBJECTIVES = {"lower": lowercase_reward, "upper": uppercase_reward}
REGISTERS = (str.lower, str.upper, str.title)
SPLITS = {"train": (320, 0), "test": (64, 1)}  # pairs, seed (the held-out prompts are drawn apart)


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


def make_pairs(num_pairs: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for prompt in demo.make_prompt_dataset(num_pairs, seed=seed)["prompt"]:
        words = prompt.removeprefix("Describe: ").split()
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(3, 6)))
        chosen, rejected = (style(answer) for style in rng.sample(REGISTERS, 2))
        labels = [sign(reward([chosen])[0] - reward([rejected])[0]) for reward in OBJECTIVES.values()]
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "objective_labels": labels})
    return rows


def main(directory: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_preferences")) -> None:
    os.makedirs(directory, exist_ok=True)
    for split, (num_pairs, seed) in SPLITS.items():
        with open(os.path.join(directory, f"{split}.jsonl"), "w") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in make_pairs(num_pairs, seed))


if __name__ == "__main__":
    main()
