"""A bounded, in-memory record of what the gateway saw for each routed request.

Exactly the gateway's view in the visibility model: ids, a nonce prefix, byte sizes,
the plaintext usage the miner reported, status and timing — never content (the
gateway has none). Each API key can read back its own entries (``GET /v1/requests``),
which lets a user audit what the router learned about their traffic.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import asdict, dataclass

__all__ = ["JournalEntry", "RequestJournal"]


@dataclass(frozen=True, slots=True)
class JournalEntry:
    at: float
    key_id: str
    chute_id: str
    instance_id: str
    nonce_prefix: str
    e2e_version: int
    stream: bool
    request_bytes: int
    response_bytes: int
    prompt_tokens: int
    completion_tokens: int
    status: int
    duration_ms: float
    #: the miner broke off after the response started (the client saw an error event)
    interrupted: bool = False

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class RequestJournal:
    """The last ``maxlen`` entries (oldest dropped first); thread-safe appends."""

    def __init__(self, maxlen: int = 1000) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=maxlen)
        self._lock = threading.Lock()

    def record(self, entry: JournalEntry) -> None:
        with self._lock:
            self._entries.append(entry)

    def recent(self, key_id: str, limit: int = 50) -> list[JournalEntry]:
        """Newest first, only ``key_id``'s entries."""
        with self._lock:
            mine = [e for e in reversed(self._entries) if e.key_id == key_id]
        return mine[:limit]

    @staticmethod
    def now() -> float:
        return time.time()
