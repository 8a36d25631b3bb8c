"""``chutes-subnet gateway`` with a validator wallet signs every forward (btauth/1)."""

from __future__ import annotations

import argparse
import gc

from chutes_subnet.auth import ValidatorGate, forward_signer
from chutes_subnet.chain import Metagraph, Neuron
from chutes_subnet.cli import build_parser
from chutes_subnet.gateway import cli as gateway_cli
from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58


def test_forward_signer_headers_pass_the_miners_validator_gate(tmp_path):
    validator = ensure_dev_wallet("v", "hot", str(tmp_path))
    miner = ensure_dev_wallet("m", "hot", str(tmp_path))
    mg = Metagraph(netuid=1, block=1, neurons=(
        Neuron(0, hotkey_ss58(validator), coldkey_ss58(validator), True, 500.0, None),
        Neuron(1, hotkey_ss58(miner), coldkey_ss58(miner), False, 0.0, "127.0.0.1:1"),
    ))
    gate = ValidatorGate(hotkey_ss58(miner), lambda: mg, min_stake=100.0)
    sign = forward_signer(validator)
    headers = sign("POST", "/e2e/invoke", b"ciphertext", hotkey_ss58(miner))
    assert gate.authorize(headers, b"ciphertext", method="POST", path="/e2e/invoke").uid == 0


def test_gateway_cli_wallet_flags_reach_the_app_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "home"))
    ensure_dev_wallet("gw", "default", str(tmp_path / "w"))
    args = build_parser().parse_args([
        "gateway", "--wallet.name", "gw", "--wallet.path", str(tmp_path / "w"),
        "--registry", "memory://", "--nonces", "memory://"])
    settings = gateway_cli._gateway_settings(args)
    assert settings["wallet"] == ["gw", "default", str(tmp_path / "w")]
    app, resources = gateway_cli._build(settings)
    assert len(resources) == 3
    signer = app.state.gateway.forward_signer
    assert signer is not None
    headers = signer("POST", "/e2e/invoke", b"x", hotkey_ss58(ensure_dev_wallet("m", "hot", str(tmp_path / "w"))))
    gw_wallet = ensure_dev_wallet("gw", "default", str(tmp_path / "w"))
    assert headers["X-Bittensor-Hotkey"] == hotkey_ss58(gw_wallet) and headers["X-Bittensor-Signature"]
    unsigned = gateway_cli._gateway_settings(argparse.Namespace(
        **{**vars(args), "wallet_name": None, "dangerous_unsigned_forwards": True}))
    assert unsigned["wallet"] is None


def test_gateway_without_a_signer_refuses_to_start_and_says_why(tmp_path, monkeypatch, capsys):
    """Issue 17 item 2: an unsigned gateway made every call a 401 from the miner."""
    from chutes_subnet.cli import main

    monkeypatch.setenv("CHUTES_SUBNET_HOME", str(tmp_path / "home"))
    code = main(["gateway", "--registry", "memory://", "--nonces", "memory://",
                 "--listen", "127.0.0.1:1"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert err.startswith("chutes-subnet gateway: error: no --wallet.name")
    assert "401" in err and "--dangerous-unsigned-forwards" in err


def test_hotkey_signer_signs_like_the_wallet_without_rereading_keyfiles(tmp_path):
    from chutes_subnet.auth import hotkey_signer, sign_headers

    w = ensure_dev_wallet("s", "hot", str(tmp_path))
    signer = hotkey_signer(w)
    assert signer.ss58_address == hotkey_ss58(w)
    assert hotkey_signer(signer) is signer
    headers = sign_headers(signer, method="POST", path="/x", body=b"b", receiver_ss58=hotkey_ss58(w))
    assert headers["X-Bittensor-Hotkey"] == hotkey_ss58(w)


def test_tune_gc_freezes_startup_objects_and_raises_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        gateway_cli._tune_gc()
        assert gc.get_threshold() == (gateway_cli._GC_GEN0_THRESHOLD, *before[1:])
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
