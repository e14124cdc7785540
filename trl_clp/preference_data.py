"""The names `trl_clp.preference_data` held before it got a module per job, re-exported so user code keeps working.

The two layouts and their check are in `trl_clp.preference_layouts`, the adapters from public datasets in
`trl_clp.preference_adapters`, pairs from reward functions in `trl_clp.preference_sampling`; import them from there.
"""

from .preference_adapters import (
    HELPSTEER2_ATTRIBUTES,
    IDENTICAL_PAIRS,
    PKU_SAFERLHF_LABEL_COLUMNS,
    PKU_SAFERLHF_OBJECTIVES,
    TIED_PAIRS,
    ULTRAFEEDBACK_ASPECTS,
    UNRATED,
    check_adapter_objectives,
    helpsteer2_to_scores,
    pku_saferlhf_to_labels,
    ultrafeedback_to_scores,
)
from .preference_layouts import LAYOUT_DESCRIPTIONS, PEEKED_ROWS, SIGNAL_COLUMNS, check_preference_dataset
from .preference_sampling import pairs_from_reward_functions, sample_completions

__all__ = [
    "HELPSTEER2_ATTRIBUTES",
    "IDENTICAL_PAIRS",
    "LAYOUT_DESCRIPTIONS",
    "PEEKED_ROWS",
    "PKU_SAFERLHF_LABEL_COLUMNS",
    "PKU_SAFERLHF_OBJECTIVES",
    "SIGNAL_COLUMNS",
    "TIED_PAIRS",
    "ULTRAFEEDBACK_ASPECTS",
    "UNRATED",
    "check_adapter_objectives",
    "check_preference_dataset",
    "helpsteer2_to_scores",
    "pairs_from_reward_functions",
    "pku_saferlhf_to_labels",
    "sample_completions",
    "ultrafeedback_to_scores",
]
