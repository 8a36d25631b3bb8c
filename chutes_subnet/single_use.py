"""Single-use stores: one protocol, one consume semantics, one outcome type.

Four stores guard against reuse, and all consume the same way:

=============================================  ==========================  ==========
store                                          token                       kind
=============================================  ==========================  ==========
``nonces.NonceStore`` (gateway invoke nonces)  nonce + ``NonceScope``      issued
``nonces.SeenNonceCache`` (miner replay)       ``"n:"+nonce``, replay id   recorder
``auth.BoundedNonceStore`` (btauth/1 replay)   ``(hotkey, nonce_ns)``      recorder
``attestation.ChallengeBook`` (challenges)     32-byte nonce               issued
=============================================  ==========================  ==========

**Semantics.** ``consume(token)`` returns :attr:`Use.ACCEPTED` for exactly one caller
per token within the token's lifetime, however many present it concurrently: an
*issued* store accepts only tokens it issued (and forgets them when consumed); a
*recorder* accepts any token the first time and remembers it for its retention.
Every other call returns the reason as a :class:`Use`; a rejected token is never an
exception. Only a store that cannot answer raises
(:class:`~chutes_subnet.errors.NonceStoreUnavailable`). Recorders that are full of
live entries answer :attr:`Use.FULL` rather than forget an entry (fail closed).

In-process stores implement :class:`SingleUse`; the invoke nonce store talks to
SQLite or Redis and is its async twin (``async consume(nonce, scope) -> Use``),
the way httpx pairs ``BaseTransport`` with ``AsyncBaseTransport``.
"""

from __future__ import annotations

import enum
from typing import Protocol, TypeVar

__all__ = ["Use", "SingleUse"]

_T = TypeVar("_T", contravariant=True)


class Use(enum.Enum):
    """The outcome of presenting a single-use token; the value is the reason code."""

    ACCEPTED = "accepted"
    #: never issued, or issued and already consumed (an issued store cannot tell)
    UNKNOWN = "unknown"
    #: seen before within the retention (recorders)
    USED = "used"
    EXPIRED = "expired"
    #: issued for another scope (key, chute, instance); the token is not burned
    SCOPE = "scope"
    #: the recorder is full of live entries and refuses new tokens
    FULL = "full"

    @property
    def ok(self) -> bool:
        return self is Use.ACCEPTED

    def __bool__(self) -> bool:
        # every member would be truthy, so ``if store.consume(t):`` would accept replays
        raise TypeError("a Use is not a bool: test .ok")


class SingleUse(Protocol[_T]):
    """A store that accepts each token once (see the module doc)."""

    def consume(self, token: _T) -> Use:
        """:attr:`Use.ACCEPTED` the first time; the reason otherwise."""
        ...
