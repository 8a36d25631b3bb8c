"""--config TOML for the commands: flag > environment > file > default (issue 17,
"Operations"; JSON logs and --logging.logging_dir are in test_logsetup.py)."""

from __future__ import annotations

import os

import pytest

from chutes_subnet.configfile import apply_command_config, apply_config_file
from chutes_subnet.errors import ConfigError


def _miner(argv, monkeypatch, env=None):
    from chutes_subnet.miner import cli

    for name in list(os.environ):
        if name.startswith(cli.ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in (env or {}).items():
        monkeypatch.setenv(name, value)
    parser = cli.build_parser()
    return apply_config_file(parser, parser.parse_args(argv), argv)


def test_miner_settings_come_from_the_file_unless_a_flag_or_env_var_says_otherwise(
        tmp_path, monkeypatch):
    cfg = tmp_path / "miner.toml"
    cfg.write_text('netuid = 64\ntee = "simulated"\n[axon]\nport = 9000\nexternal_ip = '
                   '"203.0.113.7"\nno_serve = true\n[wallet]\nname = "from-file"\n')
    args = _miner(["--config", str(cfg)], monkeypatch)
    assert (args.netuid, getattr(args, "axon.port"), getattr(args, "wallet.name")) == \
        (64, 9000, "from-file")
    assert getattr(args, "axon.no_serve") is True and args.tee == "simulated"
    args = _miner(["--config", str(cfg), "--axon.port", "9100"], monkeypatch,
                  {"CHUTES_MINER_WALLET_NAME": "from-env"})
    assert getattr(args, "axon.port") == 9100                  # the flag wins
    assert getattr(args, "wallet.name") == "from-env"          # then the environment
    assert args.netuid == 64                                   # then the file


@pytest.mark.parametrize(("text", "message"), [
    ("netuid = 'x'\n", "netuid = 'x' is invalid"),
    ('tee = "sgx"\n', "tee must be one of"),
    ("[axon]\nno_serve = 1\n", "axon.no_serve must be true or false"),
    ("nope = 1\n", "unknown setting 'nope'"),
    ("netuid = \n", "TOML syntax error"),
])
def test_bad_files_are_one_clear_error(tmp_path, monkeypatch, text, message):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        _miner(["--config", str(cfg)], monkeypatch)


def test_gateway_subcommand_reads_its_file(tmp_path, monkeypatch):
    from chutes_subnet.cli import build_parser

    cfg = tmp_path / "gw.toml"
    cfg.write_text('registry = "memory://"\nnonces-per-instance = 3\nlisten = "127.0.0.1:8123"\n')
    parser = build_parser()
    argv = ["gateway", "--config", str(cfg), "--nonces-per-instance", "4"]
    args = apply_command_config(parser, parser.parse_args(argv), argv)
    assert args.registry == "memory://" and args.listen == ("127.0.0.1", 8123)
    assert args.nonces_per_instance == 4
