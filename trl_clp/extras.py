"""Optional dependencies, installed by the package's extras: a missing one fails in one line naming the command.

| extra | installs | for |
|---|---|---|
| `serve` | fastapi, uvicorn | `trl-clp serve`, `trl_clp.serving` |
| `plots` | matplotlib | `trl_clp.plotting`, the PNG fronts of `trl-clp train`/`evaluate`/`plot` |
| `rewards` | rouge-score | the ROUGE rewards (`RougeReward`, `rouge1`/`rouge2`/`rougeL`) |
| `quantization` | bitsandbytes | 4-bit and 8-bit base models (`BitsAndBytesConfig`, `--load_in_4bit`) |
| `text-rewards` | vaderSentiment, textblob, textstat | the text scorers `sentiment_reward`, `objectivity_reward`, `readability_reward`, `descriptiveness_reward`; the English lexicon of `trl_clp.gaming_guards` |
| `gguf` | gguf | `trl-clp convert-gguf` |
| `civility` | alt-profanity-check | `civility_reward` (it pins scikit-learn and joblib exactly: install it on its own) |
"""

from __future__ import annotations

import importlib


def require(module_name: str, extra: str, purpose: str):
    """Import and return `module_name`, or raise an `ImportError` naming `pip install "trl-clp[<extra>]"`.

    Args:
        module_name: the module to import, e.g. `"rouge_score.rouge_scorer"`.
        extra: the extra of trl-clp that installs it.
        purpose: what needs it, shown in the message (e.g. `"the ROUGE rewards"`).
    """
    try:
        return importlib.import_module(module_name)
    except ImportError as error:
        package = module_name.split(".")[0]
        raise ImportError(
            f'`{package}` is not installed; it is needed for {purpose}: `pip install "trl-clp[{extra}]"`.'
        ) from error
