"""Validator and benchmark configuration refuse impossible values."""

from __future__ import annotations

import pytest

from chutes_subnet.validator import BenchmarkConfig, ValidatorConfig


def test_config_validation():
    with pytest.raises(ValueError):
        ValidatorConfig(concurrency=0)
    with pytest.raises(ValueError):
        ValidatorConfig(rechallenge_probability=1.5)
    with pytest.raises(ValueError):
        BenchmarkConfig(prompts_per_miner=2, verify_sample=3)
