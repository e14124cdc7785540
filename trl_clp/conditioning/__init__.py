"""Weight conditioning of LoRA adapters: metadata (`config`), per-row block mixing (`layer`), inference (`model`)."""

from .config import CLP_CONFIG_NAME, CONDITIONING_VARIANTS, ConditioningConfig, format_weighted_prompt
from .layer import WeightConditioner, scale_lora_blocks
from .model import SteerableModel

__all__ = [
    "CLP_CONFIG_NAME",
    "CONDITIONING_VARIANTS",
    "ConditioningConfig",
    "SteerableModel",
    "WeightConditioner",
    "format_weighted_prompt",
    "scale_lora_blocks",
]
