"""Weight conditioning of LoRA adapters, shaped like a PEFT tuner: metadata (`config`), per-row block mixing
(`layer`), building and loading the conditioned model (`model`), and the prompting baseline's prompt text (`prompts`).
"""

from .config import CLP_CONFIG_NAME, CONDITIONING_VARIANTS, ConditioningConfig
from .layer import WeightConditioner, scale_lora_blocks
from .model import SteerableModel
from .prompts import format_weighted_prompt

__all__ = [
    "CLP_CONFIG_NAME",
    "CONDITIONING_VARIANTS",
    "ConditioningConfig",
    "SteerableModel",
    "WeightConditioner",
    "format_weighted_prompt",
    "scale_lora_blocks",
]
