"""Create (or reuse) unencrypted development wallets and print their addresses.

Usage: python scripts/localnet/dev_wallets.py WALLET_PATH NAME [NAME ...]
Prints one line per wallet: ``NAME COLDKEY_SS58 HOTKEY_SS58`` (hotkey "default").
Mnemonics are never printed: these keys are throwaway devnet keys.
"""

from __future__ import annotations

import sys

from chutes_subnet.wallets import coldkey_ss58, ensure_dev_wallet, hotkey_ss58


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    path, names = argv[0], argv[1:]
    for name in names:
        wallet = ensure_dev_wallet(name, "default", path)
        print(name, coldkey_ss58(wallet), hotkey_ss58(wallet))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
