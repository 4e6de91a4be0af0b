"""Zeroed factor sums backed by transparent huge pages (Linux, CPU).

A fresh large tensor is memory the process has never touched: every 4 KiB page faults once when
it is first written, and the kernel zeroes it then. For resnet18's Kronecker factors (94M elements,
376 MiB in float32) that first touch was the largest fixed cost of a fit: ``torch.zeros`` of one
4,609² factor took 35–65 ms, of which zeroing already-mapped memory is 4 ms. Where the kernel
grants transparent huge pages only on request (``/sys/kernel/mm/transparent_hugepage/enabled`` set
to ``madvise``, a common default), asking for them with ``madvise(MADV_HUGEPAGE)`` before the first
write makes that 13 ms (2 MiB pages: 512× fewer faults), and later passes over the factor miss the
TLB less. Anywhere else (other systems, GPU, small tensors, a failing call) this is ``torch.zeros``.
"""

from __future__ import annotations

import ctypes
import sys

import torch

MADV_HUGEPAGE = 14  # from <sys/mman.h> on Linux
HUGE_PAGE = 2**21
MIN_BYTES = 4 * HUGE_PAGE  # below this the few 4 KiB faults cost little

_madvise: ctypes._CFuncPtr | None = None  # type: ignore[name-defined]
_madvise_loaded = False


def _load_madvise() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    global _madvise, _madvise_loaded
    if not _madvise_loaded:
        _madvise_loaded = True
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(None, use_errno=True).madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                _madvise = fn
            except (OSError, AttributeError):
                _madvise = None
    return _madvise


def factor_zeros(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``torch.zeros(rows, cols)``, in huge pages where that is possible (see the module docstring)."""
    out = torch.empty(rows, cols, dtype=dtype, device=device)
    size = out.numel() * out.element_size()
    madvise = _load_madvise() if out.device.type == "cpu" and size >= MIN_BYTES else None
    if madvise is not None:
        # Only whole 2 MiB pages inside the allocation (the allocator's own header is left alone).
        start = -(-out.data_ptr() // HUGE_PAGE) * HUGE_PAGE
        end = (out.data_ptr() + size) // HUGE_PAGE * HUGE_PAGE
        if end > start:
            madvise(start, end - start, MADV_HUGEPAGE)  # advice only: on failure the pages are ordinary
    return out.zero_()
