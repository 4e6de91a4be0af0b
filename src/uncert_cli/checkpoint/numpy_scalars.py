"""NumPy scalars inside a torch checkpoint, readable with ``torch.load(weights_only=True)``.

Training scripts often save ``{"state_dict": ..., "epoch": np.int64(3), "best_acc": np.float64(0.97)}``.
torch's weights-only unpickler refuses NumPy's scalar constructor unless it is allowed by name, so such a
file read as "a Python pickle" and needed ``--trust-pickle`` (full unpickling, arbitrary code). Allowing
the scalar constructor, ``numpy.dtype`` and the numeric dtype classes lets it load as plain numbers:
``scalar(dtype, bytes)`` builds a number from raw bytes; an object dtype could only wrap an object the
weights-only unpickler built itself. Nothing else is allowed.
"""

from __future__ import annotations

from typing import Any

_NUMERIC = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
            "float16", "float32", "float64", "complex64", "complex128")


def numpy_scalar_globals() -> list[Any]:
    """The allow-list for ``torch.serialization.safe_globals``: ``(object, name as pickled)`` pairs, under
    NumPy 2's module names and the ``numpy.core`` ones that files pickled by NumPy 1 reference.
    """
    import numpy as np

    try:  # NumPy 2 (pyproject admits NumPy >= 1.24, where the module is numpy.core)
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]

    allowed: list[Any] = [(scalar, "numpy._core.multiarray.scalar"), (scalar, "numpy.core.multiarray.scalar"),
                          (np.dtype, "numpy.dtype")]
    for name in _NUMERIC:
        dtype_class = type(np.dtype(name))
        allowed.append((dtype_class, f"numpy.dtypes.{dtype_class.__name__}"))
    return allowed
