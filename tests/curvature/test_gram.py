"""Gram updates (syrk and blocked backends) against explicit products."""

from __future__ import annotations

import pytest
import torch

from uncert_cli.curvature import gram


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("width", [13, 603])
def test_gram_lower_matches_full_product(dtype: torch.dtype, width: int) -> None:
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(50, width, dtype=dtype, generator=gen)
    acc = torch.zeros(width, width, dtype=dtype)
    gram.gram_lower_(acc, X, alpha=0.5)
    gram.gram_lower_(acc, X[:7], alpha=2.0)
    expected = 0.5 * X.t() @ X + 2.0 * X[:7].t() @ X[:7]
    tol = {"rtol": 1e-5, "atol": 1e-4} if dtype == torch.float32 else {}
    torch.testing.assert_close(gram.mirror_lower_(acc), expected, **tol)


@pytest.mark.parametrize("use_syrk", [True, False])
def test_gram_into_a_strided_block_leaves_the_rest_alone(use_syrk: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    # The input factor of a layer with bias accumulates into the top-left block of an (I+1)² matrix.
    if not use_syrk:
        monkeypatch.setattr(gram, "_syrk_for", lambda dtype: None)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(30, 600, dtype=torch.float64, generator=gen)
    full = torch.zeros(601, 601, dtype=torch.float64)
    full[600] = 7.0
    gram.gram_lower_(full[:600, :600], X)
    torch.testing.assert_close(full[:600, :600].tril(), (X.t() @ X).tril())
    assert torch.all(full[600] == 7.0) and torch.all(full[:600, 600] == 0.0)


def test_column_slices_and_empty_inputs() -> None:
    gen = torch.Generator().manual_seed(2)
    wide = torch.randn(20, 40, dtype=torch.float64, generator=gen)
    X = wide[:, 5:25]  # rows with a leading dimension larger than the width
    acc = torch.zeros(20, 20, dtype=torch.float64)
    gram.gram_lower_(acc, X)
    gram.gram_lower_(acc, X[:0])
    torch.testing.assert_close(gram.mirror_lower_(acc), X.t() @ X)


def test_mirror_lower_is_in_place_and_symmetric() -> None:
    gen = torch.Generator().manual_seed(3)
    M = torch.randn(700, 700, dtype=torch.float64, generator=gen)
    L = M.tril().clone()
    out = gram.mirror_lower_(M, block=256)
    assert out.data_ptr() == M.data_ptr()
    torch.testing.assert_close(M, L + L.tril(-1).t())


def test_syrk_backend_is_found_and_agrees_on_x86_torch() -> None:
    # torch's x86 wheels link MKL; elsewhere the blocked path is the only one and this is skipped.
    routine = gram._syrk_for(torch.float32)
    if routine is None:
        pytest.skip("no MKL syrk in this torch build")
    assert gram._syrk_agrees({torch.float32: routine})


def test_mirror_lower_scales_every_tile_once() -> None:
    gen = torch.Generator().manual_seed(4)
    M = torch.randn(600, 600, dtype=torch.float64, generator=gen)
    L = M.tril().clone()
    gram.mirror_lower_(M, block=128, scale=0.25)
    torch.testing.assert_close(M, 0.25 * (L + L.tril(-1).t()))
