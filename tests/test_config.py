"""The configs' documentation and parsing: field docs in one place, `fixed_weights` kept as given and parsed."""

import dataclasses
import inspect

import pytest

from trl_clp import MultiObjectiveConfig, MultiObjectiveGRPOConfig
from trl_clp.rloo_config import ConditioningFields

from .conftest import tiny_config


@pytest.mark.parametrize("config_class", [MultiObjectiveConfig, MultiObjectiveGRPOConfig])
def test_parameters_block_documents_every_field_with_its_help(config_class):
    doc = inspect.getdoc(config_class)
    assert "\nParameters:\n" in doc
    flat = " ".join(doc.split())
    for f in dataclasses.fields(ConditioningFields):
        assert f"{f.name} (`" in doc, f"{f.name} is missing from {config_class.__name__}'s Parameters block"
        assert " ".join(f.metadata["help"].split()) in flat, f"{f.name}'s help differs from the docstring"
        for choice in f.metadata.get("choices", []):
            assert repr(choice) in doc


def test_fixed_weights_stay_as_given_and_are_parsed_into_floats(tmp_path):
    config = tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=["0.25,0.75", "1,0"])
    assert config.fixed_weights == ["0.25,0.75", "1,0"]  # what the CLI gave, as declared (list[str])
    assert config.parsed_fixed_weights == [[0.25, 0.75], [1.0, 0.0]]
    from_python = tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=[[0.5, 0.5]])
    assert from_python.parsed_fixed_weights == [[0.5, 0.5]]
    assert tiny_config(tmp_path).parsed_fixed_weights is None
    for bad in ("nan,1", "inf,0", "-0.5,1.5"):
        with pytest.raises(ValueError, match="simplex"):
            tiny_config(tmp_path, weight_distribution="fixed", fixed_weights=[bad])
