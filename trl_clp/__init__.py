"""trl-clp: Conditional Language Policies on Hugging Face TRL: one model steerable across several rewards."""

__version__ = "0.1.0"

from .callbacks import FrontEvaluationCallback
from .conditioning import ConditioningConfig, SteerableModel, format_weighted_prompt
from .config import MultiObjectiveConfig
from .grpo_config import MultiObjectiveGRPOConfig
from .grpo_trainer import MultiObjectiveGRPOTrainer
from .evaluation import Front, evaluate_front
from .sampling import check_weights, sample_group_weights, simplex_grid
from .trainer import MultiObjectiveTrainer

__all__ = [
    "ConditioningConfig",
    "Front",
    "FrontEvaluationCallback",
    "MultiObjectiveConfig",
    "MultiObjectiveGRPOConfig",
    "MultiObjectiveGRPOTrainer",
    "MultiObjectiveTrainer",
    "SteerableModel",
    "check_weights",
    "evaluate_front",
    "format_weighted_prompt",
    "sample_group_weights",
    "simplex_grid",
]
