"""trl-clp: Conditional Language Policies on Hugging Face TRL: one model steerable across several rewards."""

__version__ = "0.1.0"

from .conditioning import ConditioningConfig, SteerableModel, format_weighted_prompt
from .config import MultiObjectiveConfig
from .sampling import check_weights, sample_group_weights, simplex_grid
from .trainer import MultiObjectiveTrainer

__all__ = [
    "ConditioningConfig",
    "MultiObjectiveConfig",
    "MultiObjectiveTrainer",
    "SteerableModel",
    "check_weights",
    "format_weighted_prompt",
    "sample_group_weights",
    "simplex_grid",
]
