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

from chutes_subnet.errors import ConfigError

__all__ = [
    "WalletNotFoundError",
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


class WalletNotFoundError(ConfigError, FileNotFoundError):
    """The wallet, its hotkey or its public coldkey is missing or unreadable."""


def _unreadable(file: Path) -> str | None:
    if os.access(file, os.R_OK):
        return None
    st = file.stat()
    return (f"cannot read {file} as uid {os.getuid()} (owner uid {st.st_uid}, mode "
            f"{st.st_mode & 0o777:04o}): run as the wallet's owner (docker-compose.yml: "
            f"CHUTES_UID=$(id -u)) or make the file readable by this user")


def load_wallet(name: str, hotkey: str, path: str = DEFAULT_WALLET_PATH) -> bt.Wallet:
    """The wallet ``name`` with hotkey ``hotkey`` under ``path``.

    Raises :class:`WalletNotFoundError` (a ``FileNotFoundError`` naming the missing
    file and the fix, never key content) when the wallet, the hotkey or the public
    coldkey does not exist or cannot be read, so a misconfigured neuron fails at
    start-up instead of at its first signature.
    """
    root = Path(path).expanduser()
    wallet_dir = _wallet_dir(name, path)
    hotkey_file = wallet_dir / "hotkeys" / hotkey
    if not wallet_dir.is_dir():
        known = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        raise WalletNotFoundError(
            f"wallet {name!r} not found in {root} (wallets there: {known or 'none'}): fix "
            f"--wallet.name / --wallet.path, or create it with btcli wallet create")
    if not hotkey_file.is_file():
        hotkeys = wallet_dir / "hotkeys"
        known = sorted(p.name for p in hotkeys.iterdir()) if hotkeys.is_dir() else []
        raise WalletNotFoundError(
            f"wallet {name!r} has no hotkey {hotkey!r} ({hotkey_file} missing; hotkeys: "
            f"{known or 'none'}): fix --wallet.hotkey, or create it with btcli wallet "
            f"new-hotkey --wallet.name {name} --wallet.hotkey {hotkey}")
    coldkeys = [f for f in (wallet_dir / "coldkeypub.txt", wallet_dir / "coldkey") if f.is_file()]
    if not coldkeys:
        raise WalletNotFoundError(f"no coldkey in wallet directory {wallet_dir}: copy "
                                  f"coldkeypub.txt there or regenerate it with btcli")
    for file in (hotkey_file, coldkeys[0]):
        problem = _unreadable(file)
        if problem:
            raise WalletNotFoundError(problem)
    return bt.Wallet(name=name, hotkey=hotkey, path=str(root))


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
