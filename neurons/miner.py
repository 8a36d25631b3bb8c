"""chutes-subnet miner neuron: ``python neurons/miner.py --help``.

A thin launcher for :func:`chutes_subnet.miner.cli.main` (also installed as
``chutes-miner``). Flags are bittensor-style and each is settable by an environment
variable; see docs/miner.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script from a source checkout
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chutes_subnet.miner.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
