#!/usr/bin/env python3
"""chutes-subnet validator neuron (thin CLI; see docs/validator.md).

    python neurons/validator.py --netuid 1 --wallet.name validator --wallet.hotkey default \
        --subtensor.network finney
    python neurons/validator.py scores        # print the score table
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from chutes_subnet.validator.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
