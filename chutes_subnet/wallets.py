"""Wallet loading for miners, validators and the demo.

Thin helpers over ``bittensor.Wallet`` (coldkey + named hotkey under
``<path>/<name>/``). Keys are read from disk lazily by the SDK; nothing here ever
prints or logs a mnemonic, seed or private key.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import bittensor as bt

__all__ = [
    "DEFAULT_WALLET_PATH",
    "load_wallet",
    "ensure_dev_wallet",
    "hotkey_ss58",
    "coldkey_ss58",
]

log = logging.getLogger(__name__)

DEFAULT_WALLET_PATH = os.path.join("~", ".bittensor", "wallets")


def _wallet_dir(name: str, path: str) -> Path:
    return Path(path).expanduser() / name


def load_wallet(name: str, hotkey: str, path: str = DEFAULT_WALLET_PATH) -> bt.Wallet:
    """The wallet ``name`` with hotkey ``hotkey`` under ``path``.

    Raises ``FileNotFoundError`` (naming the missing file, never its content) when
    the hotkey or the public coldkey does not exist, so a misconfigured neuron fails
    at start-up instead of at its first signature.
    """
    wallet_dir = _wallet_dir(name, path)
    hotkey_file = wallet_dir / "hotkeys" / hotkey
    if not hotkey_file.is_file():
        raise FileNotFoundError(f"hotkey file not found: {hotkey_file}")
    if not (wallet_dir / "coldkeypub.txt").is_file() and not (wallet_dir / "coldkey").is_file():
        raise FileNotFoundError(f"no coldkey in wallet directory: {wallet_dir}")
    return bt.Wallet(name=name, hotkey=hotkey, path=str(Path(path).expanduser()))


def ensure_dev_wallet(name: str, hotkey: str, path: str = DEFAULT_WALLET_PATH) -> bt.Wallet:
    """Load the wallet, creating missing keys *unencrypted* and without prompts.

    For local development, the demo and tests only: the coldkey is written to disk
    without a password. Existing keys are never overwritten. Mnemonics are
    discarded (not printed, not logged).
    """
    expanded = str(Path(path).expanduser())
    wallet = bt.Wallet(name=name, hotkey=hotkey, path=expanded)
    wallet_dir = _wallet_dir(name, expanded)
    discard = _discard_mnemonic
    if not (wallet_dir / "coldkey").is_file():
        wallet.create_new_coldkey(use_password=False, suppress=True, on_mnemonic=discard)
        log.info("created development coldkey %s (unencrypted)", coldkey_ss58(wallet))
    if not (wallet_dir / "hotkeys" / hotkey).is_file():
        wallet.create_new_hotkey(use_password=False, suppress=True, on_mnemonic=discard)
        log.info("created development hotkey %s", hotkey_ss58(wallet))
    return wallet


def _discard_mnemonic(_mnemonic: str) -> None:
    """Swallow a freshly generated mnemonic: dev keys are throwaway by design."""


def hotkey_ss58(wallet: Any) -> str:
    """The ss58 address of the wallet's hotkey, read from the public file if present."""
    try:
        return str(wallet.hotkeypub.ss58_address)
    except (AttributeError, FileNotFoundError, OSError, ValueError):
        return str(wallet.hotkey.ss58_address)


def coldkey_ss58(wallet: Any) -> str:
    """The ss58 address of the wallet's coldkey (public file; never unlocks it)."""
    return str(wallet.coldkeypub.ss58_address)
