"""The chute registry's HTTP face on the gateway, and who may see which chute.

Endpoints (JSON; every one but ``/v1/chutes/serving`` needs an API key)::

    POST   /v1/chutes                   deploy or update a spec (201 created, 200 updated)
    GET    /v1/chutes                   the chutes the caller may see, with their targets
    GET    /v1/chutes/serving           public live chutes for miners: manifest, hardware,
                                        scaling, target (no key; private chutes absent)
    GET    /v1/chutes/{chute_id}        one chute (404 if unknown, retired to others, or
                                        private and the caller is not allowed)
    GET    /v1/chutes/{chute_id}/history  its audit log (same visibility)
    DELETE /v1/chutes/{chute_id}        retire (owner only)

Private chutes answer **404, not 403**, to keys outside the allowlist, with the body
of an unknown chute, here and on discovery and invoke (:func:`check_chute`), so
existence does not leak. Miners learn private chutes from their owner (who can put a
miner operator's key on the allowlist); validators read the store in-process.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from chutes_subnet.asgi import Refusal
from chutes_subnet.errors import StoreUnavailable
from chutes_subnet.gateway.state import off_loop, store_down
from chutes_subnet.registry.chutes import (
    MAX_SPEC_BYTES,
    Chute,
    ChuteForbidden,
    ChuteNotFound,
    ChuteSpecError,
    parse_chute_spec,
)
from chutes_subnet.registry.demand import Target, plan_targets
from chutes_subnet.wire.protocol import parse_json

if TYPE_CHECKING:
    from chutes_subnet.gateway.state import GatewayState

__all__ = ["UNKNOWN_CHUTE", "add_chute_routes", "check_chute", "chute_targets"]

#: The one answer for a chute the caller may not know about (unknown, retired, private).
UNKNOWN_CHUTE = (404, "unknown_chute", "no such chute")


def _unknown() -> Refusal:
    return Refusal(*UNKNOWN_CHUTE)


async def _read(state: GatewayState, fn: Any, *args: Any) -> Any:
    """A chute-store call, off the event loop when its database may block; a store
    that is down fails closed (503)."""
    try:
        return await off_loop(state.chutes, fn, *args)
    except StoreUnavailable:
        raise store_down() from None


async def check_chute(state: GatewayState, key_id: str | None, chute_id: str) -> Chute | None:
    """The live chute ``key_id`` may use, else the unknown-chute 404.

    Without a chute registry (``state.chutes is None``) every chute is open, as before
    chutes were deployments, and None is returned.
    """
    if state.chutes is None:
        return None
    chute = await _read(state, state.chutes.get, chute_id)
    if chute is None or chute.retired or not chute.visible_to(key_id):
        raise _unknown()
    return chute


def chute_targets(state: GatewayState) -> dict[str, Target]:
    """Targets for every live chute from this replica's demand and the registry."""
    if state.chutes is None:
        return {}
    live = [c for c in state.chutes.all() if not c.retired]
    current = Counter(r.chute_id for r in state.registry.list_verified())
    return plan_targets(state.demand.snapshot(),
                        [(c.chute_id, c.spec.min_instances, c.spec.max_instances) for c in live],
                        current, capacity_per_instance=state.config.instance_capacity)


def _view(chute: Chute, targets: dict[str, Target], *, owner_view: bool) -> dict[str, Any]:
    out = chute.to_dict()
    if not owner_view:  # the allowlist and owner are the owner's business
        out.pop("allow", None)
        out.pop("owner", None)
    t = targets.get(chute.chute_id)
    out["target"] = t.to_dict() if t is not None else None
    return out


def add_chute_routes(app: FastAPI, state: GatewayState) -> None:
    """Register the chute endpoints (only when the gateway has a chute store)."""
    if state.chutes is None:
        return
    store = state.chutes

    async def visible(request: Request, chute_id: str) -> tuple[Any, Chute]:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        chute = await _read(state, store.get, chute_id)
        if chute is None or not chute.visible_to(key.key_id) or (
                chute.retired and chute.owner != key.key_id):
            raise _unknown()
        return key, chute

    @app.post("/v1/chutes")
    async def deploy(request: Request) -> JSONResponse:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        raw = await request.body()
        if len(raw) > MAX_SPEC_BYTES:
            raise Refusal(413, "too_large", f"a chute spec is at most {MAX_SPEC_BYTES} bytes")
        try:
            spec = parse_chute_spec(parse_json(raw))
        except ValueError as exc:  # ChuteSpecError, or JSON that does not parse
            message = str(exc) if isinstance(exc, ChuteSpecError) else "body is not JSON"
            raise Refusal(400, "bad_chute_spec", message) from None
        existing = await _read(state, store.get, spec.chute_id)
        if existing is not None and existing.owner != key.key_id:
            if not existing.visible_to(key.key_id):
                raise _unknown()
            raise Refusal(403, "not_owner", f"chute {spec.name} is owned by another key")
        try:
            chute = await _read(state, store.deploy, spec, key.key_id)
        except ChuteForbidden as exc:  # lost a race with another deployer
            raise Refusal(403, "not_owner", str(exc)) from None
        status = 201 if chute.version == 1 and existing is None else 200
        return JSONResponse(_view(chute, chute_targets(state), owner_view=True),
                            status_code=status)

    @app.get("/v1/chutes")
    async def list_chutes(request: Request) -> dict[str, Any]:
        key = await state.admit(request.headers.get("authorization"), check_quota=False)
        chutes = await _read(state, store.all)
        targets = chute_targets(state)
        return {"data": [_view(c, targets, owner_view=c.owner == key.key_id) for c in chutes
                         if c.visible_to(key.key_id) and (not c.retired or
                                                          c.owner == key.key_id)]}

    @app.get("/v1/chutes/serving")
    async def serving() -> dict[str, Any]:
        chutes = await _read(state, store.all)
        targets = chute_targets(state)
        return {"data": [_view(c, targets, owner_view=False) for c in chutes
                         if not c.retired and c.spec.visibility == "public"]}

    @app.get("/v1/chutes/{chute_id}")
    async def show(chute_id: str, request: Request) -> dict[str, Any]:
        key, chute = await visible(request, chute_id)
        return _view(chute, chute_targets(state), owner_view=chute.owner == key.key_id)

    @app.get("/v1/chutes/{chute_id}/history")
    async def history(chute_id: str, request: Request) -> dict[str, Any]:
        await visible(request, chute_id)
        changes = await _read(state, store.history, chute_id)
        return {"chute_id": chute_id, "changes": [
            {"version": c.version, "action": c.action, "actor": c.actor, "at": c.at,
             "spec": c.spec} for c in changes]}

    @app.delete("/v1/chutes/{chute_id}")
    async def retire(chute_id: str, request: Request) -> dict[str, Any]:
        key, chute = await visible(request, chute_id)
        try:
            retired = await _read(state, store.retire, chute_id, key.key_id)
        except ChuteForbidden:
            raise Refusal(403, "not_owner", f"chute {chute.name} is owned by another key") \
                from None
        except ChuteNotFound:
            raise _unknown() from None
        return _view(retired, {}, owner_view=True)
