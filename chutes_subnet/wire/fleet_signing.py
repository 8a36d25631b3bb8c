"""A miner hotkey's signed instance list: one hotkey fronts many attested instances.

A miner's published endpoint (its axon ``ip:port`` on chain) answers
``GET /fleet`` (:data:`~.protocol.FLEET_PATH`) with a :class:`~.messages.SignedFleet`::

    {"v": 1,
     "fleet": {"netuid": 7, "hotkey": "<ss58>", "issued_at": 1764668000,
               "expires_at": 1764668600,
               "instances": [{"url": "http://10.0.0.5:8091", "instance_id": "<32 hex>|null"},
                             ...]},
     "signature": "<128 hex: sr25519 by fleet.hotkey over the canonical bytes>"}

Canonical bytes (what the hotkey signs; version 1)::

    b"chutes-subnet/fleet/1\\n" + JSON(fleet, sort_keys, separators=(",", ":"),
                                      ensure_ascii=True)

The signature is made with the hotkey's bittensor keypair, the one that signs btauth/1
requests. A verifier (:func:`verify_fleet`) reads at most :data:`~.protocol.MAX_FLEET_BYTES`,
and refuses (:class:`~chutes_subnet.errors.FleetError`, fail closed) a list that is
malformed, over :data:`~.protocol.MAX_FLEET_INSTANCES` entries, for another subnet,
signed by anything but the uid's hotkey, not yet valid, expired, or claiming more
than :data:`~.protocol.MAX_FLEET_VALIDITY_SECONDS` of validity. Listing an instance
proves nothing about it: every listed instance is attested on its own, and its
attestation binds the hotkey (report_data), so another hotkey's instance listed
here fails its challenge.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from chutes_subnet.errors import FleetError
from chutes_subnet.wire.messages import FleetInstance, FleetList, SignedFleet
from chutes_subnet.wire.protocol import (
    FLEET_CLOCK_SKEW_SECONDS,
    MAX_FLEET_BYTES,
    MAX_FLEET_VALIDITY_SECONDS,
    parse_json,
)

__all__ = ["FLEET_VERSION", "canonical_bytes", "fleet_json", "sign_fleet", "verify_fleet"]

FLEET_VERSION = 1
_DOMAIN = b"chutes-subnet/fleet/1\n"


def canonical_bytes(fleet: FleetList) -> bytes:
    """The exact bytes the hotkey signs."""
    return _DOMAIN + json.dumps(fleet.model_dump(mode="json"), sort_keys=True,
                                separators=(",", ":"), ensure_ascii=True).encode("ascii")


def sign_fleet(signer: Any, *, netuid: int, instances: Sequence[FleetInstance],
               issued_at: int, ttl_seconds: int) -> SignedFleet:
    """The list of ``instances`` signed by ``signer`` (a hotkey keypair, or a wallet).

    Raises ``ValueError`` for an invalid list (too many entries, duplicates, a TTL
    outside 1..:data:`MAX_FLEET_VALIDITY_SECONDS`) or a signer that is not sr25519.
    """
    from bittensor import sp_core
    from bittensor.signing import resolve_signer

    if not 0 < ttl_seconds <= MAX_FLEET_VALIDITY_SECONDS:
        raise ValueError(f"ttl_seconds must be in 1..{MAX_FLEET_VALIDITY_SECONDS}")
    keypair = resolve_signer(signer, role="hotkey")
    if keypair.crypto_type != sp_core.CRYPTO_SR25519:
        raise ValueError("instance lists are signed with an sr25519 hotkey")
    try:
        fleet = FleetList(netuid=netuid, hotkey=keypair.ss58_address, instances=list(instances),
                          issued_at=issued_at, expires_at=issued_at + ttl_seconds)
    except ValidationError as exc:
        raise ValueError(f"invalid instance list: {_first_error(exc)}") from None
    return SignedFleet(v=FLEET_VERSION, fleet=fleet,
                       signature=bytes(keypair.sign(canonical_bytes(fleet))).hex())


def fleet_json(signed: SignedFleet) -> bytes:
    """The wire form of ``signed`` (compact JSON)."""
    return signed.model_dump_json().encode("ascii")


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid"))


def verify_fleet(raw: bytes, *, hotkey: str, netuid: int, now: float) -> FleetList:
    """The verified list in ``raw`` for ``hotkey`` on ``netuid``; raises :class:`FleetError`.

    Codes: ``too_large``, ``malformed``, ``wrong_hotkey``, ``wrong_netuid``,
    ``not_yet_valid``, ``expired``, ``too_long_valid``, ``bad_signature``.
    """
    from bittensor import sp_core

    if len(raw) > MAX_FLEET_BYTES:
        raise FleetError("too_large", f"instance list exceeds {MAX_FLEET_BYTES} bytes")
    try:
        signed = SignedFleet.model_validate(parse_json(raw))
    except ValidationError as exc:
        raise FleetError("malformed", f"instance list malformed: {_first_error(exc)}") from None
    except (ValueError, UnicodeDecodeError):
        raise FleetError("malformed", "instance list is not JSON") from None
    fleet = signed.fleet
    if fleet.hotkey != hotkey:
        raise FleetError("wrong_hotkey", "instance list is signed for another hotkey")
    if fleet.netuid != netuid:
        raise FleetError("wrong_netuid", f"instance list is for netuid {fleet.netuid}")
    if fleet.issued_at > now + FLEET_CLOCK_SKEW_SECONDS:
        raise FleetError("not_yet_valid", "instance list is issued in the future")
    if now >= fleet.expires_at:
        raise FleetError("expired", "instance list has expired")
    if not 0 < fleet.expires_at - fleet.issued_at <= MAX_FLEET_VALIDITY_SECONDS:
        raise FleetError("too_long_valid", f"instance list validity must be within "
                                           f"{MAX_FLEET_VALIDITY_SECONDS} s")
    try:
        ok = sp_core.verify(canonical_bytes(fleet), bytes.fromhex(signed.signature), hotkey,
                            sp_core.CRYPTO_SR25519)
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise FleetError("bad_signature", "instance list signature does not verify for the "
                                          "hotkey")
    return fleet
