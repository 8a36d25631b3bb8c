"""Verify every instance of a model through a gateway (``chutes-subnet verify``).

The same discovery and :class:`~chutes_subnet.client.instance_verifier.InstanceVerifier` flow
the transports run before sending, driven once over all offered instances, so a user
can see what their client would accept and why: :func:`verify_model` returns one
:class:`~chutes_subnet.client.verify.ClientVerdict` per instance.
"""

from __future__ import annotations

import httpx

from chutes_subnet.errors import NoInstancesError

from ._flow import Flow, Step, drive_sync
from .client_policy import ClientPolicy
from .discovery import looks_like_chute_id, parse_instances, parse_models
from .instance_verifier import InstanceVerifier
from .verify import ClientVerdict

__all__ = ["verify_model", "verify_model_flow"]


def _get(url: str, auth: dict[str, str], timeout: float) -> Step:
    return Step(httpx.Request("GET", url, headers=auth, extensions={"timeout": {
        "connect": timeout, "read": timeout, "write": timeout, "pool": timeout}}), True)


def _refused(what: str, resp: httpx.Response) -> NoInstancesError:
    return NoInstancesError(f"{what}: the gateway answered HTTP {resp.status_code}")


def verify_model_flow(base: str, api_key: str, model: str, verifier: InstanceVerifier,
                      timeout: float = 30.0) -> Flow[list[ClientVerdict]]:
    """Discovery, then one verdict per offered instance (sans-I/O)."""
    auth = {"Authorization": f"Bearer {api_key}"}
    chute = model if looks_like_chute_id(model) else None
    if chute is None:
        resp = yield _get(f"{base}/v1/models", auth, timeout)
        if resp.status_code != 200:
            raise _refused("model list", resp)
        chute = parse_models(resp.json()).get(model)
        if chute is None:
            raise NoInstancesError("the gateway serves no model of that name")
    resp = yield _get(f"{base}/e2e/instances/{chute}", auth, timeout)
    if resp.status_code != 200:
        raise _refused("instance discovery", resp)
    offers, _ttl = parse_instances(resp.json())
    verdicts = []
    for offer, _nonces in offers:
        verdicts.append((yield from verifier.flow(base, auth, offer, chute)))
    return verdicts


def verify_model(gateway: str, api_key: str, model: str, *, policy: ClientPolicy | None = None,
                 allow_v1: bool = False, timeout: float = 60.0,
                 inner: httpx.BaseTransport | None = None,
                 verifier: InstanceVerifier | None = None) -> list[ClientVerdict]:
    """Challenge and verify every instance the gateway offers for ``model``
    (``verifier`` replaces ``policy``/``allow_v1``, e.g. to keep its pins)."""
    verifier = verifier or InstanceVerifier(policy or ClientPolicy.default(),
                                            require_v2=not allow_v1)
    transport = inner or httpx.HTTPTransport()
    try:
        return drive_sync(verify_model_flow(gateway.rstrip("/"), api_key, model, verifier,
                                            timeout), transport)
    finally:
        if inner is None:
            transport.close()
