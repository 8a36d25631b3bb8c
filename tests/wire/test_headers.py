"""The wire layer: invoke headers, the one usage parser, and that both live in one place.

(The gateway now bills from signed receipts, not from ``X-E2E-Usage``: its metering
tests are in tests/test_receipts.py and tests/gateway/test_app.py.)
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from chutes_subnet.errors import HeaderError, UsageError
from chutes_subnet.wire import headers as wire_headers
from chutes_subnet.wire.headers import (
    MAX_USAGE_TOKENS,
    InvokeHeaders,
    Usage,
    parse_usage,
    parse_usage_header,
)
from chutes_subnet.wire.protocol import INVOKE_PATHS, STREAM_PATHS

PACKAGE = Path(__file__).resolve().parents[2] / "chutes_subnet"

_ids = st.text(st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=128)


def _lower(h: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in h.items()}


@given(_ids, _ids, _ids, st.sampled_from(INVOKE_PATHS), st.booleans(), st.sampled_from([1, 2]),
       st.booleans())
def test_invoke_headers_round_trip(chute, inst, nonce, path, stream, version, explicit) -> None:
    sent = InvokeHeaders(chute, inst, nonce, path, stream, version,
                         version_explicit=explicit or version != 1)
    if stream and path not in STREAM_PATHS:  # embeddings are never streamed
        with pytest.raises(HeaderError, match="must be false"):
            InvokeHeaders.parse(_lower(sent.to_headers()))
        return
    assert InvokeHeaders.parse(_lower(sent.to_headers())) == sent


GOOD = _lower(InvokeHeaders("c", "i", "n", INVOKE_PATHS[0], True, 2).to_headers())


@pytest.mark.parametrize("name,value,reason", [
    ("x-chute-id", "", "bad_header"),
    ("x-instance-id", "x" * 129, "bad_header"),
    ("x-e2e-nonce", "a\tb", "bad_header"),
    ("x-e2e-path", "/v1/models", "bad_path"),
    ("x-e2e-stream", "yes", "bad_header"),
    ("x-e2e-version", "3", "bad_version"),
    ("x-e2e-version", "00000000000000000000000000000002", "bad_version"),
    ("x-e2e-version", "²", "bad_version"),
])
def test_bad_invoke_headers_carry_their_reason(name: str, value: str, reason: str) -> None:
    with pytest.raises(HeaderError) as info:
        InvokeHeaders.parse({**GOOD, name: value})
    assert info.value.reason == reason


def test_absent_version_means_v1_and_is_not_forwarded() -> None:
    h = {k: v for k, v in GOOD.items() if k != "x-e2e-version"}
    parsed = InvokeHeaders.parse(h)
    assert parsed.version == 1 and not parsed.version_explicit
    assert "X-E2E-Version" not in parsed.to_headers()


@pytest.mark.parametrize("obj,expected", [
    ({"prompt_tokens": 4, "completion_tokens": 9, "total_tokens": 13}, Usage(4, 9)),
    ({}, Usage(0, 0)),
    ({"completion_tokens": MAX_USAGE_TOKENS}, Usage(0, MAX_USAGE_TOKENS)),
])
def test_usage_parses_bounded_counts(obj: object, expected: Usage) -> None:
    assert parse_usage(obj) == expected
    assert parse_usage_header(expected.to_header()) == expected


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=4),
                    lambda c: st.lists(c, max_size=3)
                    | st.dictionaries(st.sampled_from(["prompt_tokens", "completion_tokens", "x"]),
                                      c, max_size=3), max_leaves=8))
def test_usage_is_bounded_integers_or_a_usage_error(obj: object) -> None:
    try:
        usage = parse_usage(obj)
    except UsageError:
        return
    for n in usage:
        assert type(n) is int and 0 <= n <= MAX_USAGE_TOKENS


def _literals(pattern: str) -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in ("wire/headers.py",):
            continue
        for no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, line, re.IGNORECASE):
                found.append(f"{rel}:{no}: {line.strip()}")
    return found


def test_header_names_are_written_only_in_wire_headers() -> None:
    names = [v for k, v in vars(wire_headers).items()
             if k.startswith("H_") and v.lower().startswith("x-")]
    pattern = "[\"'](" + "|".join(re.escape(n) for n in names) + ")[\"']"
    assert _literals(pattern) == []


def test_usage_counts_are_read_only_by_the_wire_parser() -> None:
    # a usage dict read field by field anywhere else is a second parser
    assert _literals(r"(\.get\(|usage\[)[\"'](prompt|completion)_tokens[\"']") == []


def test_usage_header_parsing() -> None:
    assert parse_usage_header('{"prompt_tokens": 4, "completion_tokens": 9}') == (4, 9)
    assert parse_usage_header(None) is None
    for bad in ("", "nope", '{"prompt_tokens": -1}', '{"prompt_tokens": true}',
                "[1]", "{" * 5000, '{"completion_tokens": 1e999}',
                '{"completion_tokens": 1099511627777}', '{"prompt_tokens": 4.0}',
                '{"completion_tokens": "9"}', "{\"\u00e9\u4e2d\": 1"):
        with pytest.raises(UsageError):
            parse_usage_header(bad)
