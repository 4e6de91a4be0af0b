"""The curvature methods, one builder per ``--method`` in one table.

:data:`METHODS` maps a method's name to its :class:`~.base.CurvatureMethod`: how it builds the
curvature and what memory it needs (stored curvature, last phase), read by ``workflows.fit`` and
``fit_memory``. A method class registers itself by declaring its ``name`` (a member of
:class:`~uncert_cli.core.vocabulary.Method`), and this package imports every module in it, so a new
method is one file here (its block class may live in the same file). A method's blocks are read back
by ``posterior.structures`` and ``storage.codecs`` through their storage tags.
"""

from __future__ import annotations

from uncert_cli.core.registry import import_package_modules
from uncert_cli.core.vocabulary import Method
from uncert_cli.curvature.methods.base import REGISTERED_METHODS, BatchSource, BuildRequest, CurvatureMethod

import_package_modules(__name__, __path__)  # every method class registers itself in REGISTERED_METHODS

# In the order of the Method enum (the order of the CLI's choices and of messages listing methods);
# tests/cli/test_vocabulary.py checks that every member has a builder.
METHODS: dict[str, CurvatureMethod] = {m: REGISTERED_METHODS[m] for m in Method if m in REGISTERED_METHODS}
RANKED_METHODS: tuple[str, ...] = tuple(name for name, method in METHODS.items() if method.takes_rank)

__all__ = ["METHODS", "RANKED_METHODS", "BatchSource", "BuildRequest", "CurvatureMethod", "Method"]
