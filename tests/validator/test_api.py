"""The public surface of chutes_subnet.validator: an explicit, complete ``__all__``."""

from __future__ import annotations

import chutes_subnet.validator as validator_pkg


def test_public_names():
    import inspect

    public = {n for n in dir(validator_pkg) if not n.startswith("_") and n != "annotations"
              and not inspect.ismodule(getattr(validator_pkg, n))}
    assert sorted(validator_pkg.__all__) == sorted(public)
