"""Moved to :mod:`uncert_cli.cli.demo`; this import path is kept for one release."""

import sys

from uncert_cli.cli import demo as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
