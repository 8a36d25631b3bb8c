"""Tools of the ``dev`` extra that a test needs: missing is a failed test with one line
saying how to get it, never a silent skip (CI installs the extra)."""

from __future__ import annotations

import importlib
from types import ModuleType

import pytest

__all__ = ["require_dev_extra"]


def require_dev_extra(module: str) -> ModuleType:
    """Import ``module`` (part of ``pip install -e '.[dev]'``) or fail the calling test."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is missing: it is in the dev extra, pip install -e '.[dev]' "
                    f"({exc})", pytrace=False)
