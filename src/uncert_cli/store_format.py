"""Moved to :mod:`uncert_cli.storage.arrays`; this import path is kept for one release."""

import sys

from uncert_cli.storage import arrays as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
