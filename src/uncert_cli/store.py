"""Moved to :mod:`uncert_cli.storage.factor_file`; this import path is kept for one release."""

import sys

from uncert_cli.storage import factor_file as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
