"""trl-clp: Conditional Language Policies on Hugging Face TRL: one model steerable across several rewards."""

__version__ = "0.1.0"

import logging


class _Without4bitCpuKernelWarning(logging.Filter):
    """Drop bitsandbytes' warning about its optional 4-bit CPU kernel (`pip install kernels`).

    PEFT imports bitsandbytes whenever it is installed, and bitsandbytes then warns on every CPU with AVX512-BF16,
    in every command, although only 4-bit models on a CPU could use that kernel. 4-bit training here runs on GPUs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "gemm_4bit_forward" not in str(record.msg)


# Before anything imports peft (and with it bitsandbytes), so the filter is in place when the warning is logged.
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_Without4bitCpuKernelWarning())

from .callbacks import FrontEvaluationCallback
from .conditioning import ConditioningConfig, SteerableModel, format_weighted_prompt
from .dpo_config import MultiObjectiveDPOConfig
from .dpo_trainer import MultiObjectiveDPOTrainer
from .evaluation import Front, evaluate_front
from .grpo_config import MultiObjectiveGRPOConfig
from .grpo_trainer import MultiObjectiveGRPOTrainer
from .rloo_config import MultiObjectiveConfig
from .rloo_trainer import MultiObjectiveTrainer
from .sampling import check_weights, sample_group_weights, simplex_grid

__all__ = [
    "ConditioningConfig",
    "Front",
    "FrontEvaluationCallback",
    "MultiObjectiveConfig",
    "MultiObjectiveDPOConfig",
    "MultiObjectiveDPOTrainer",
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
