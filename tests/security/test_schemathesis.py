"""CI variant of the schemathesis run: a few cases per operation of both apps.

The documented run (``python -m fuzz.api --examples 1000``) and its numbers are in
docs/security.md. Here each operation of the miner and the gateway gets positive and
negative cases, raw and with real credentials; no 5xx (other than documented 503
refusals), no traceback, no hang.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from schemathesis import openapi

from fuzz.api import OpFinding, fuzz_operation, gateway_spec, miner_spec
from tests.security_fixtures import Stack, security_stack

EXAMPLES = 12


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with security_stack(str(tmp_path_factory.mktemp("wallets"))) as s:
        yield s


def _gateway_app(stack: Stack):  # the stack's gateway app is not exposed; the routes are static
    from chutes_subnet.gateway.app import create_app
    from fuzz.api import _probe_gateway_app

    return _probe_gateway_app(create_app)


def test_specs_cover_the_raw_routes(stack: Stack) -> None:
    gw = gateway_spec(_gateway_app(stack))
    mn = miner_spec(stack.miner_app)
    assert {"/e2e/invoke", "/e2e/instances/{chute_id}", "/v1/models"} <= set(gw["paths"])
    assert {"/e2e/invoke", "/attest", "/health"} <= set(mn["paths"])
    invoke = {p["name"] for p in mn["paths"]["/e2e/invoke"]["post"]["parameters"]}
    assert {"X-E2E-Nonce", "X-Chute-Id", "X-E2E-Stream"} <= invoke


def _check(finding: OpFinding) -> None:
    assert finding.calls > 0
    assert finding.failures == []


def test_gateway_operations(stack: Stack) -> None:
    schema = openapi.from_dict(gateway_spec(_gateway_app(stack)))
    for op in schema.get_all_operations():
        _check(fuzz_operation(schema, op.ok().label, stack.gateway_url, EXAMPLES,
                              lambda *_: {"Authorization": f"Bearer {stack.api_key}"}))


def test_miner_operations(stack: Stack) -> None:
    schema = openapi.from_dict(miner_spec(stack.miner_app))
    for op in schema.get_all_operations():
        _check(fuzz_operation(schema, op.ok().label, stack.miner_url, EXAMPLES,
                              lambda _m, path, body: stack.sign("validator", path, body)))


def test_oracle_flags_a_server_error(stack: Stack) -> None:
    """Control: a route that fails with 500 is reported."""
    from fastapi import FastAPI

    from tests.servers import UvicornThread

    app = FastAPI()

    @app.get("/boom")
    def boom(q: int) -> dict[str, int]:
        return {"x": 1 // (q - q)}

    with UvicornThread(app) as srv:
        schema = openapi.from_dict(app.openapi())
        finding = fuzz_operation(schema, "GET /boom", srv.url, 5, lambda *_: {})
    assert any("HTTP 500" in f for f in finding.failures)
