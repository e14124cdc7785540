# Copyright 2026 The trl-clp developers. Apache-2.0.
"""
Compare steerable models trained on a real model (CLP variants, prompting, Rewarded Soups) on held-out chat prompts:
`trl-clp compare` with the SmolLM2 tone recipe's sampling (temperature 0.8, 24 new tokens, as in training).

    python examples/compare_real_model.py \
        --runs attn-CLP=outputs/tone-attn-s0,outputs/tone-attn-s1 full-CLP=outputs/tone-full-s0 \
               prompting=outputs/tone-prompt-s0 "Rewarded Soups=outputs/tone-rs-s0" \
        --prompts examples/data/tone_prompts/test.jsonl --reward_funcs sentiment objectivity \
        --output_dir outputs/tone-comparison

is the same as

    trl-clp compare --temperature 0.8 --max_new_tokens 24 --runs ... --prompts ... --reward_funcs ... --output_dir ...

Every flag of `trl-clp compare --help` applies (a flag given here overrides the recipe's): each `label=path[,path...]`
is one method, several paths its seeds; `--reuse` reads the evaluations already in `--output_dir`
(`<label>-s<i>.json` and `.samples.jsonl`, `base.*`) without opening the runs; `--kl_weights_for` and `--kl_series`
add fronts at several KL weights. It writes `comparison.json`, `report.md` (per method its hypervolume and margins,
for every two methods the paired differences with a verdict, the gaming guards and guarded fronts, the α and equal-KL
sections), `fronts.png`, `equal_kl.png` and `generations.md`. What each number means: docs/evaluation.md.
"""

from __future__ import annotations

import sys

from trl_clp.cli import main as trl_clp_main

RECIPE_SAMPLING = ["--temperature", "0.8", "--max_new_tokens", "24"]  # examples/configs/smollm2_tone.yaml's


def main(argv: list[str] | None = None) -> None:
    trl_clp_main(["compare", *RECIPE_SAMPLING, *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
