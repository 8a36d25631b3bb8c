"""The registry of fuzz targets: ``TARGETS`` maps a name to its :class:`Target`."""

from __future__ import annotations

from ._base import Crash, Target
from .attestation import TARGETS as _ATTESTATION
from .e2ee import TARGETS as _E2EE
from .models import TARGETS as _MODELS
from .stream import TARGETS as _STREAM

__all__ = ["TARGETS", "Target", "Crash"]

TARGETS: dict[str, Target] = {t.name: t for t in (*_ATTESTATION, *_E2EE, *_STREAM, *_MODELS)}
