"""HTTP errors map to the failure reasons a round reports."""

from __future__ import annotations

import httpx
import pytest

from chutes_subnet.validator import EvaluationFailure
from chutes_subnet.validator.failures import from_http_error


def test_http_errors_map_to_reason_kinds():
    req = httpx.Request("POST", "http://x")
    assert from_http_error(httpx.ReadTimeout("t", request=req), "attest").reason == "timeout"
    assert from_http_error(httpx.ConnectError("c", request=req), "attest").reason == "unreachable"
    assert from_http_error(httpx.DecodingError("d", request=req), "x").reason == "bad_response"
    with pytest.raises(ValueError):
        EvaluationFailure("made_up", "nope")
