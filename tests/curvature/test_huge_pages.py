"""Factor sums in huge pages are ordinary zeroed tensors, whatever the kernel grants."""

from __future__ import annotations

import torch

from uncert_cli.curvature.huge_pages import MIN_BYTES, factor_zeros


def test_large_and_small_factor_sums_are_zero_and_writable() -> None:
    side = int((MIN_BYTES // 4) ** 0.5) + 3  # just above the size that asks for huge pages
    for rows, cols in [(side, side), (5, 7)]:
        M = factor_zeros(rows, cols, torch.float32, torch.device("cpu"))
        assert M.shape == (rows, cols) and M.dtype == torch.float32 and M.is_contiguous()
        assert int(M.count_nonzero()) == 0
        M[-1, -1] = 2.0
        assert float(M.sum()) == 2.0
    assert factor_zeros(3, 3, torch.float64, torch.device("cpu")).dtype == torch.float64
