"""The gate judges exactly the version it was asked to judge."""

from __future__ import annotations

import pytest

from modelcontract import CHAMPION, MODEL_NAME
from training import registry
from training.config import PromoteConfig, TrainConfig
from training.errors import RegistryError
from training.promote import promote
from training.train import fit_and_evaluate, load_training_data, log_and_register


@pytest.mark.slow
def test_promote_refuses_to_judge_another_version_than_the_one_expected(
    tracking: str, small_config: TrainConfig
) -> None:
    client = registry.connect()
    data = load_training_data(small_config)
    log_and_register(client, data, fit_and_evaluate(data.split, small_config), small_config)
    with pytest.raises(RegistryError, match="moved to version 1 while this run trained version 7"):
        promote(PromoteConfig(expected_challenger="7"), client=client)
    assert registry.version_by_alias(client, MODEL_NAME, CHAMPION) is None
