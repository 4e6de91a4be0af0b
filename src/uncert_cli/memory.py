"""Moved to :mod:`uncert_cli.core.memory`; this import path is kept for one release."""

import sys

from uncert_cli.core import memory as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
