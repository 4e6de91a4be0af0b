"""Moved to :mod:`uncert_cli.workflows.fit_memory`; this import path is kept for one release."""

import sys

from uncert_cli.workflows import fit_memory as _moved

sys.modules[__name__] = _moved  # the old name is the same module object
