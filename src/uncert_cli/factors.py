"""Moved to :mod:`uncert_cli.storage.opening`; this import path is kept for one release."""

import sys

from uncert_cli.storage import opening as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
