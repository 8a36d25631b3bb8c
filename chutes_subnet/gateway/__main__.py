"""``python -m chutes_subnet.gateway gateway|keys ...``."""

import sys

from chutes_subnet.gateway.cli import main

sys.exit(main())
