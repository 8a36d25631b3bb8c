"""Schema-driven API fuzzing (schemathesis) of the miner and the gateway.

Both apps hide their OpenAPI documents (``openapi_url=None``) and serve their hot
paths as raw ASGI routes, so the specs are built here: FastAPI's own document for the
ordinary routes, plus ``/e2e/invoke`` (every invoke header, an octet-stream body) and
the miner's ``/attest`` (btauth/1 headers, :class:`~chutes_subnet.wire.messages.AttestRequest`).

Every generated case (positive and negative schemathesis modes) is sent twice: as
generated, and with real credentials (a valid API key for the gateway; a fresh
btauth/1 signature from a registered validator for the miner) so the checks behind
authentication are reached. Oracle per response: no 5xx except the documented refusals
in ``DELIBERATE_5XX`` (e.g. 503 ``no_instances`` with Retry-After), no Python
traceback in the body, an answer within ``TIMEOUT`` seconds.

Usage (documented run, real servers on loopback)::

    python -m fuzz.api --examples 1000
    python -m fuzz.api --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from chutes_subnet.wire.messages import AttestRequest

__all__ = ["gateway_spec", "miner_spec", "OpFinding", "fuzz_operation", "main"]

TIMEOUT = 10.0
_TRACEBACK_MARKERS = (b"Traceback (most recent call last)", b'File "/')
#: 5xx answers that are documented refusals, not failures: (status, reason) with a retry hint
DELIBERATE_5XX = {(503, "no_instances"), (503, "no_instance"), (503, "draining"),
                  (503, "nonce_store_unavailable"), (503, "collateral_unavailable")}
_INVOKE_HEADERS = ("X-Chute-Id", "X-Instance-Id", "X-E2E-Nonce", "X-E2E-Path", "X-E2E-Version")


def _header(name: str, required: bool = False, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required,
            "schema": {"type": "string", **schema}}


def _invoke_operation(auth_headers: list[dict[str, Any]]) -> dict[str, Any]:
    params = [_header(h, required=True) for h in _INVOKE_HEADERS]
    params.append(_header("X-E2E-Stream", required=True, enum=["true", "false"]))
    return {"post": {
        "operationId": "invoke",
        "parameters": params + auth_headers,
        "requestBody": {"required": True, "content": {"application/octet-stream": {
            "schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "envelope or SSE"},
                      "default": {"description": "refusal"}},
    }}


def gateway_spec(app: Any) -> dict[str, Any]:
    """OpenAPI 3 document of a gateway app, with ``/e2e/invoke`` and Authorization added."""
    spec = copy.deepcopy(app.openapi())
    auth = [_header("Authorization")]
    for ops in spec["paths"].values():
        for op in ops.values():
            op.setdefault("parameters", []).extend(auth)
    spec["paths"]["/e2e/invoke"] = _invoke_operation(auth)
    return spec


def miner_spec(app: Any) -> dict[str, Any]:
    """OpenAPI 3 document of a miner app, with ``/e2e/invoke`` and ``/attest`` added."""
    from chutes_subnet.auth import AUTH_HEADERS

    spec = copy.deepcopy(app.openapi())
    btauth = [_header(h) for h in AUTH_HEADERS]
    spec["paths"]["/e2e/invoke"] = _invoke_operation(btauth)
    spec["paths"]["/attest"] = {"post": {
        "operationId": "attest", "parameters": btauth,
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": AttestRequest.model_json_schema()}}},
        "responses": {"200": {"description": "evidence"}, "default": {"description": "refusal"}},
    }}
    return spec


@dataclass
class OpFinding:
    """What one operation produced: counts per status class and any oracle failure."""

    label: str
    calls: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    slowest: float = 0.0


def _deliberate(resp: httpx.Response) -> bool:
    """A documented 5xx refusal: known reason code and a Retry-After / X-E2E-Retry hint."""
    try:
        reason = resp.json().get("reason")
    except (ValueError, AttributeError):
        return False
    hinted = "retry-after" in resp.headers or "x-e2e-retry" in resp.headers
    return hinted and (resp.status_code, reason) in DELIBERATE_5XX


def _body_bytes(case: Any) -> bytes:
    body = case.body
    if isinstance(body, bytes):
        return body
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    try:
        return json.dumps(body).encode()
    except (TypeError, ValueError):
        return b""


def _send(client: httpx.Client, base: str, case: Any, headers: dict[str, str],
          body: bytes | None) -> httpx.Response:
    kwargs = case.as_transport_kwargs(base_url=base)
    merged = {str(k): str(v) for k, v in (kwargs.get("headers") or {}).items()}
    merged.update(headers)
    content = _body_bytes(case) if body is None else body
    return client.request(kwargs["method"], kwargs["url"], params=kwargs.get("params"),
                          headers=merged, content=content if case.body is not None or body
                          else None)


def fuzz_operation(schema: Any, label: str, base: str, examples: int,
                   credentials: Callable[[str, str, bytes], dict[str, str]]) -> OpFinding:
    """Run ``examples`` cases per generation mode of one operation against ``base``."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from schemathesis import GenerationMode

    op = schema.find_operation_by_label(label)
    finding = OpFinding(label)
    strategy = st.one_of(op.as_strategy(generation_mode=GenerationMode.POSITIVE),
                         op.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    client = httpx.Client(timeout=TIMEOUT)

    def observe(resp: httpx.Response, started: float, how: str) -> None:
        took = time.monotonic() - started
        finding.calls += 1
        finding.slowest = max(finding.slowest, took)
        finding.statuses[resp.status_code] = finding.statuses.get(resp.status_code, 0) + 1
        if resp.status_code >= 500 and not _deliberate(resp):
            finding.failures.append(f"{how}: HTTP {resp.status_code} {resp.text[:120]!r}")
        if any(m in resp.content for m in _TRACEBACK_MARKERS):
            finding.failures.append(f"{how}: traceback in the response body")

    @settings(max_examples=examples, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(case: Any) -> None:
        for how in ("raw", "authenticated"):
            body = _body_bytes(case)
            creds = credentials(case.method.upper(), case.formatted_path, body) \
                if how == "authenticated" else {}
            started = time.monotonic()
            try:
                resp = _send(client, base, case, creds, body if how == "authenticated" else None)
            except httpx.TimeoutException:
                finding.failures.append(f"{how}: no answer within {TIMEOUT} s")
                continue
            except (httpx.InvalidURL, httpx.LocalProtocolError, UnicodeEncodeError):
                continue  # the client library refused to send it; not the server's doing
            except httpx.TransportError as exc:  # reset, closed mid-answer, ...
                finding.failures.append(f"{how}: connection failed ({type(exc).__name__})")
                continue
            observe(resp, started, how)

    try:
        one()
    finally:
        client.close()
    return finding


def run_stack(examples: int) -> list[tuple[str, OpFinding]]:
    """Start the security test stack and fuzz every operation of both apps."""
    from schemathesis import openapi

    from chutes_subnet.gateway.app import create_app as create_gateway
    from tests.security_fixtures import security_stack

    results: list[tuple[str, OpFinding]] = []
    with security_stack(tempfile.mkdtemp(prefix="chutes-api-fuzz-")) as stack:
        gw_spec = gateway_spec(_probe_gateway_app(create_gateway))
        mn_spec = miner_spec(stack.miner_app)

        def gw_creds(_m: str, _p: str, _b: bytes) -> dict[str, str]:
            return {"Authorization": f"Bearer {stack.api_key}"}

        def mn_creds(_m: str, path: str, body: bytes) -> dict[str, str]:
            return stack.sign("validator", path, body)

        for name, spec, base, creds in (("gateway", gw_spec, stack.gateway_url, gw_creds),
                                        ("miner", mn_spec, stack.miner_url, mn_creds)):
            schema = openapi.from_dict(spec)
            for op in schema.get_all_operations():
                label = op.ok().label
                results.append((name, fuzz_operation(schema, label, base, examples, creds)))
    return results


def _probe_gateway_app(create_gateway: Callable[..., Any]) -> Any:
    """A gateway app used only to read its route table for the spec."""
    from chutes_subnet.gateway.api_keys import MemoryApiKeyStore
    from chutes_subnet.gateway.config import GatewayConfig
    from chutes_subnet.gateway.usage import MemoryUsageMeter
    from chutes_subnet.nonces import MemoryNonceStore
    from chutes_subnet.registry import MemoryInstanceRegistry

    return create_gateway(GatewayConfig(), registry=MemoryInstanceRegistry(),
                          nonce_store=MemoryNonceStore(), keys=MemoryApiKeyStore(),
                          usage=MemoryUsageMeter())


def main(argv: list[str] | None = None) -> int:
    """CLI: table per operation, then one JSON line; exit 1 on any oracle failure."""
    p = argparse.ArgumentParser(prog="python -m fuzz.api", description=__doc__.split("\n")[0])
    p.add_argument("--examples", type=int, default=1000, help="cases per operation")
    p.add_argument("--quick", action="store_true", help="50 cases per operation")
    args = p.parse_args(argv)
    examples = 50 if args.quick else args.examples
    start = time.monotonic()
    results = run_stack(examples)
    print(f"{'app':8} {'operation':28} {'calls':>6} {'2xx':>5} {'4xx':>6} {'5xx':>4} "
          f"{'slowest s':>9} failures")
    for app, f in results:
        by = {c: sum(n for s, n in f.statuses.items() if s // 100 == c) for c in (2, 4, 5)}
        print(f"{app:8} {f.label:28} {f.calls:>6} {by[2]:>5} {by[4]:>6} {by[5]:>4} "
              f"{f.slowest:>9.2f} {len(f.failures)}")
        for msg in f.failures[:3]:
            print(f"    !! {msg}")
    summary = {"examples_per_operation": examples, "seconds": round(time.monotonic() - start, 1),
               "operations": len(results), "calls": sum(f.calls for _, f in results),
               "deliberate_503": sum(n for _, f in results for s, n in f.statuses.items()
                                     if s == 503),
               "failures": sum(len(f.failures) for _, f in results)}
    print(json.dumps(summary, separators=(",", ":")))
    return 1 if summary["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
