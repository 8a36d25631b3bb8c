"""The docs list every flag of the miner, validator, gateway and proxy, and list no flag
the parsers do not have (issue 17: operators follow the docs literally)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
_FLAG = re.compile(r"`(--[A-Za-z][\w.-]*)`")


def _parser(name: str) -> argparse.ArgumentParser:
    if name == "miner":
        from chutes_subnet.miner.cli import build_parser

        return build_parser()
    if name == "validator":
        from chutes_subnet.validator.cli import build_parser

        return build_parser()
    from chutes_subnet.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices[name]


def parser_flags(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions if a.help != argparse.SUPPRESS
            for o in a.option_strings if o.startswith("--") and o != "--help"}


def documented_flags(doc: str, table_after: str) -> set[str]:
    """Flags in the first column of the first table after the line ``table_after``."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    start = text.index(table_after)
    lines = text[start:].splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith("| flag "))
    flags: set[str] = set()
    for line in lines[begin + 2:]:
        if not line.startswith("|"):
            break
        flags.update(_FLAG.findall(line.split("|")[1]))
    return flags


TABLES = [
    ("miner", "miner.md", "## Flags"),
    ("validator", "validator.md", "## Flags"),
    ("gateway", "gateway.md", "Flags (`chutes-subnet gateway --help`"),
    ("proxy", "gateway.md", "Proxy flags"),
]


@pytest.mark.parametrize(("command", "doc", "anchor"), TABLES)
def test_docs_table_matches_the_parser(command, doc, anchor):
    documented, actual = documented_flags(doc, anchor), parser_flags(_parser(command))
    assert not actual - documented, f"{doc}: undocumented {command} flags {sorted(actual - documented)}"
    assert not documented - actual, f"{doc}: {command} has no flags {sorted(documented - actual)}"


def test_the_comparison_can_fail():
    parser = argparse.ArgumentParser()
    parser.add_argument("--a.b")
    parser.add_argument("--hidden", help=argparse.SUPPRESS)
    assert parser_flags(parser) == {"--a.b"}
    assert "--netuid" in documented_flags("validator.md", "## Flags")
