"""Moved to :mod:`uncert_cli.core.slow_path`; this import path is kept for one release."""

import sys

from uncert_cli.core import slow_path as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
