"""scripts/localnet.sh: syntax, and every btcli call checked against the real btcli.

The devnet itself cannot run here (no Docker engine), so instead each
``btcli <group> <command> --flag ...`` the script runs is extracted and checked
against ``btcli <group> <command> --help`` of the installed bittensor 11.3.0.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "localnet.sh"
BTCLI = shutil.which("btcli")


def _logical_lines(text: str) -> list[str]:
    """Join backslash continuations and drop comments."""
    joined = re.sub(r"\\\n\s*", " ", text)
    return [line.split(" #")[0].strip() for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")]


def _arrays(lines: list[str]) -> dict[str, list[str]]:
    arrays: dict[str, list[str]] = {}
    for line in lines:
        match = re.fullmatch(r"([A-Z_]+)=\((.*)\)", line)
        if match:
            arrays[match.group(1)] = _expand(shlex.split(match.group(2)), arrays)
    return arrays


def _expand(tokens: list[str], arrays: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for token in tokens:
        match = re.fullmatch(r"\$\{([A-Z_]+)\[@\]\}", token)
        out.extend(arrays[match.group(1)] if match else [token])
    return out


def btcli_calls(text: str) -> list[list[str]]:
    """Every btcli invocation in the script, as tokens after ``btcli`` (arrays expanded)."""
    lines = _logical_lines(text)
    arrays = _arrays(lines)
    calls = []
    for line in lines:
        for segment in re.split(r"(?:^|[;|&(]|\bif|\buntil|\bthen)\s*(?=btcli\s)", line):
            if not segment.startswith("btcli "):
                continue
            segment = re.split(r"\s(?:>|2>|\|\||&&|;|\||\))", segment)[0]
            tokens = shlex.split(segment.replace("$(", "__SUB(").replace('"', ""), posix=True)
            calls.append(_expand(tokens[1:], arrays))
    return calls


def _command_and_flags(tokens: list[str]) -> tuple[tuple[str, str], list[str]]:
    words = [t for t in tokens if not t.startswith("-")]
    flags = [t.split("=", 1)[0] for t in tokens if t.startswith("-")]
    return (words[0], words[1]), flags


@cache
def _help(group: str, command: str) -> tuple[int, str]:
    if BTCLI is None:  # it ships with bittensor, a dependency: missing is a broken install
        pytest.fail("btcli is not on PATH: it ships with bittensor==11.3.0 (pip install -e .)",
                    pytrace=False)
    env = dict(os.environ, COLUMNS="400", NO_COLOR="1", TERM="dumb")
    proc = subprocess.run([BTCLI, group, command, "--help"], capture_output=True, text=True,
                          timeout=120, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def _help_flags(help_text: str) -> set[str]:
    flags: set[str] = set()
    for line in help_text.splitlines():
        if not line.startswith("│"):
            continue
        head = line[1:].split("<", 1)[0]
        flags.update(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", head))
    return flags


def test_script_is_valid_bash_with_strict_mode():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True, timeout=30)
    text = SCRIPT.read_text()
    assert "set -euo pipefail" in text
    assert text.startswith("#!/usr/bin/env bash")
    assert os.access(SCRIPT, os.X_OK)


def test_extractor_understands_the_script_shapes():
    sample = '\n'.join([
        'A=(--network "$E" --flag-a)',
        'B=("${A[@]}" --no-prompt)',
        'until btcli subnets list "${A[@]}" --json >/dev/null 2>&1; do',
        'btcli tx transfer "${B[@]}" --wallet alice \\',
        '  --dest "$(address x 2)" --amount-tao "$F"',
        'if btcli tx start-call "${B[@]}" --netuid "$N"; then',
    ])
    calls = [_command_and_flags(c) for c in btcli_calls(sample)]
    assert calls == [
        (("subnets", "list"), ["--network", "--flag-a", "--json"]),
        (("tx", "transfer"), ["--network", "--flag-a", "--no-prompt", "--wallet", "--dest",
                              "--amount-tao"]),
        (("tx", "start-call"), ["--network", "--flag-a", "--no-prompt", "--netuid"]),
    ]


def test_script_calls_the_expected_steps():
    commands = {_command_and_flags(c)[0] for c in btcli_calls(SCRIPT.read_text())}
    for step in [("wallet", "regen-coldkey"), ("tx", "transfer"), ("tx", "register-subnet"),
                 ("tx", "start-call"), ("tx", "burned-register"), ("tx", "add-stake"),
                 ("subnets", "metagraph"), ("query", "weights")]:
        assert step in commands, step


@pytest.mark.slow
def test_every_btcli_subcommand_and_flag_exists():
    calls = [_command_and_flags(c) for c in btcli_calls(SCRIPT.read_text())]
    assert len(calls) >= 10
    commands = sorted({cmd for cmd, _ in calls})
    with ThreadPoolExecutor(max_workers=4) as pool:
        helps = dict(zip(commands, pool.map(lambda c: _help(*c), commands), strict=True))
    problems = []
    for (group, command), flags in calls:
        code, text = helps[(group, command)]
        if code != 0 or f"Usage: btcli {group} {command}" not in text:
            problems.append(f"btcli {group} {command}: no such command")
            continue
        known = _help_flags(text)
        problems += [f"btcli {group} {command}: unknown flag {flag}"
                     for flag in flags if flag not in known]
    assert not problems, "\n".join(problems)


def test_hyperparameter_name_is_owner_settable():
    _code, text = _help("tx", "set-hyperparameter")
    names = re.search(r"One of:(.*?)(?:\.|│\s*$)", " ".join(text.split()), re.S)
    assert names, "could not find the list of hyperparameter names"
    assert "commit_reveal_weights_enabled" in names.group(1)
    assert "--name commit_reveal_weights_enabled" in " ".join(SCRIPT.read_text().split())


def test_flag_checker_rejects_bogus_flags():
    """The validation above must be able to fail."""
    _code, text = _help("tx", "transfer")
    known = _help_flags(text)
    assert {"--dest", "--amount-tao", "--wallet", "--no-prompt", "--network"} <= known
    assert "--destination" not in known and "--amount_tao" not in known
    code, text = _help("tx", "no-such-command")
    assert code != 0


def test_dev_wallet_helper_prints_addresses_and_no_secrets(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "localnet" / "dev_wallets.py"), str(tmp_path),
         "owner", "miner"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines()]
    assert [r[0] for r in rows] == ["owner", "miner"]
    assert all(len(r) == 3 and r[1].startswith("5") and r[2].startswith("5") for r in rows)
    assert "mnemonic" not in (proc.stdout + proc.stderr).lower()
    again = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "localnet" / "dev_wallets.py"), str(tmp_path),
         "owner"], capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert again.stdout.split() == rows[0]  # idempotent: existing keys are reused


# --- the neuron commands the script starts (issue 17, item 1) ---------------------------

_PLACEHOLDERS = {"NETUID": "2", "WALLET_PATH": "/tmp/localnet-wallets", "MINER_PORT": "8091",
                 "ENDPOINT": "ws://127.0.0.1:9944", "STATE_DIR": "/tmp/localnet",
                 "WEIGHTS_WAIT_SECONDS": "900"}


def neuron_commands(text: str) -> dict[str, list[str]]:
    """``{"miner": argv, "validator": argv}`` of the ``neurons/*.py`` runs in ``text``."""
    joined = re.sub(r"\\\n\s*", " ", text)
    arrays = {name: shlex.split(body) for name, body in
              re.findall(r"(?:local\s+)?(\w+)=\(([^)]*)\)", joined, re.DOTALL)}
    commands: dict[str, list[str]] = {}
    for role, rest in re.findall(r"neurons/(miner|validator)\.py\s+([^)]*)\)", joined):
        argv: list[str] = []
        for token in shlex.split(rest):
            array = re.fullmatch(r"\$\{(\w+)\[@\]\}", token)
            argv.extend(arrays[array.group(1)] if array else [token])
        commands[role] = [re.sub(r"\$\{?(\w+)\}?", lambda m: _PLACEHOLDERS[m.group(1)], t)
                          for t in argv]
    return commands


def test_neuron_extractor_sees_both_commands_and_their_flags():
    sample = ('  local common=(--netuid "$NETUID"\n    --subtensor.network local)\n'
              '  (exec "$PYTHON" neurons/miner.py "${common[@]}" --x \\\n   --y 1) > l &\n')
    assert neuron_commands(sample) == {"miner": ["--netuid", "2", "--subtensor.network",
                                                 "local", "--x", "--y", "1"]}


def test_script_miner_command_parses_and_can_publish():
    from chutes_subnet.miner.cli import build_parser, chain_spec, config_from_args
    from chutes_subnet.miner.runner import advertised_endpoint

    argv = neuron_commands(SCRIPT.read_text())["miner"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse printed the unknown flag
        pytest.fail(f"neurons/miner.py rejects the script's flags {argv}: exit {exc.code}")
    config = config_from_args(args)           # simulated TEE accepted on this chain
    assert chain_spec(args) == "ws://127.0.0.1:9944" and config.tee == "simulated"
    assert advertised_endpoint(config) == ("127.0.0.1", 8091)


def test_script_validator_command_parses_in_dev_mode():
    from chutes_subnet.validator.cli import _config, build_parser

    argv = neuron_commands(SCRIPT.read_text())["validator"]
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"neurons/validator.py rejects the script's flags {argv}: exit {exc.code}")
    assert args.dev and args.netuid == 2 and args.wallet_name == "validator"
    assert args.wait_for_permit == 900  # the permit arrives at the first epoch
    assert _config(args).dangerous_accept_simulated_tee
