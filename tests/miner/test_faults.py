"""Development faults are wrappers installed only when configured: the production
invoke path carries no fault checks (the behaviour of each fault is tested in
tests/miner/test_app.py and tests/e2e/test_validator.py)."""

from __future__ import annotations

import inspect
import re

import pytest

from chutes_subnet.attestation import SimulatedProvider
from chutes_subnet.inference import make_backend
from chutes_subnet.miner import MinerConfig, create_app
from chutes_subnet.miner import invoke as invoke_module
from chutes_subnet.miner.invoke import InvokeEndpoint

HOTKEY = "5GrwvaEF5zXb26Fz9rcQpDWS57CtERHpNehXCPcNoHGKutQY"


def _app(fault: str | None):
    backend = make_backend("embedded")
    app = create_app(MinerConfig(tee="simulated", fault=fault), hotkey_ss58=HOTKEY,
                     backend=backend, provider=SimulatedProvider(), gate=None)
    invoke = next(r.endpoint for r in app.routes if getattr(r, "path", "") == "/e2e/invoke")
    return app, backend, invoke


def test_the_invoke_hot_path_has_no_fault_checks() -> None:
    assert not re.search(r"\bfaults?\b", inspect.getsource(invoke_module))  # "default" is fine


def test_without_a_fault_nothing_is_wrapped() -> None:
    app, backend, invoke = _app(None)
    assert isinstance(invoke, InvokeEndpoint)
    assert app.state.miner.backend is backend
    assert isinstance(app.state.miner.provider, SimulatedProvider)


@pytest.mark.parametrize("fault,wrapped", [("wrong-tokens", "backend"), ("stall", "invoke"),
                                           ("debug-quote", "provider"),
                                           ("foreign-hotkey", "provider")])
def test_each_fault_wraps_exactly_one_part(fault: str, wrapped: str) -> None:
    app, backend, invoke = _app(fault)
    state = app.state.miner
    assert (state.backend is not backend) == (wrapped == "backend")
    assert (not isinstance(invoke, InvokeEndpoint)) == (wrapped == "invoke")
    assert (not isinstance(state.provider, SimulatedProvider)) == (wrapped == "provider")
