"""The names `trl_clp.trainer` held before the trainers got a module each, re-exported so user code keeps working.

`MultiObjectiveTrainer` is in `trl_clp.rloo_trainer`, `ConditionedTrainerMixin` in `trl_clp.online_trainer`; import
them from there (or `from trl_clp import MultiObjectiveTrainer`).
"""

from .conditioned_trainer import DEFAULT_LORA_CONFIG, EVAL_STREAM, TRAIN_STREAM
from .guards import RewardFunctionError
from .online_trainer import ConditionedTrainerMixin, reward_function_name
from .rloo_trainer import MultiObjectiveTrainer

__all__ = [
    "DEFAULT_LORA_CONFIG",
    "EVAL_STREAM",
    "TRAIN_STREAM",
    "ConditionedTrainerMixin",
    "MultiObjectiveTrainer",
    "RewardFunctionError",
    "reward_function_name",
]
