"""``python -m chutes_subnet.client proxy ...``."""

import sys

from chutes_subnet.client.cli import main

sys.exit(main())
