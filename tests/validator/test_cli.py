"""Validator CLI flags: environment variables, and dangerous switches never from them."""

from __future__ import annotations


def test_cli_flags_from_environment(monkeypatch):
    from chutes_subnet.validator.cli import _config, build_parser

    monkeypatch.setenv("CHUTES_VALIDATOR_NEURON_TIMEOUT", "7.5")
    monkeypatch.setenv("CHUTES_VALIDATOR_ALLOW_INSECURE_SIMULATED_TEE", "1")
    args = build_parser().parse_args(["--neuron.concurrency", "3", "--neuron.prompts", "1"])
    cfg = _config(args)
    assert cfg.timeout == 7.5 and cfg.concurrency == 3
    # dangerous switches are never read from the environment (tests/validator/test_dev_mode.py)
    assert not cfg.dangerous_accept_simulated_tee
    assert cfg.benchmark.prompts_per_miner == 1 and cfg.benchmark.verify_sample == 1
    assert _config(build_parser().parse_args(["--dev"])).dangerous_accept_simulated_tee
