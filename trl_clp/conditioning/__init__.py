"""Weight conditioning of LoRA adapters, shaped like a PEFT tuner: metadata (`config`), per-row block mixing
(`layer`), building and attaching the conditioned adapter (`model`), loading and steering a trained one
(`steerable`), where its files are (`paths`), and the prompting baseline's prompt text (`prompts`).
"""

from .config import CLP_CONFIG_NAME, CONDITIONING_VARIANTS, ConditioningConfig
from .layer import WeightConditioner, scale_lora_blocks
from .prompts import format_weighted_prompt
from .steerable import SteerableModel

__all__ = [
    "CLP_CONFIG_NAME",
    "CONDITIONING_VARIANTS",
    "ConditioningConfig",
    "SteerableModel",
    "WeightConditioner",
    "format_weighted_prompt",
    "scale_lora_blocks",
]
