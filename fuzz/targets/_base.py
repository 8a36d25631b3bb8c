"""The :class:`Target` record and the crash rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Target", "Crash"]


class Crash(AssertionError):
    """A target's own oracle failed (wrong output, not just an unexpected exception)."""


@dataclass(frozen=True)
class Target:
    """One fuzz target.

    ``run(data)`` feeds ``data`` to the code under test. It may raise only
    ``expected`` (the project's error types for that boundary); any other exception,
    including :class:`Crash` from an oracle, is a finding. ``seeds()`` returns valid
    inputs to start mutating from.
    """

    name: str
    what: str
    run: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]

    def check(self, data: bytes) -> None:
        """Run one input; returns normally unless the input found a crash."""
        try:
            self.run(data)
        except self.expected:
            pass
