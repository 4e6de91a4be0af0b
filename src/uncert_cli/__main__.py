"""``python -m uncert_cli`` (also the entry point under ``torchrun``)."""

import sys

from uncert_cli.cli.main import main

sys.exit(main())
