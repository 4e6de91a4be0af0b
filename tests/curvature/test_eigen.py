"""``robust_eigh`` on the factors that break plain eigh, and what a fit records when it needed help."""

from __future__ import annotations

import math

import pytest
import torch

from uncert_cli.curvature import eigen as eigen_module
from uncert_cli.curvature.blocks import DenseBlock, KroneckerBlock, ensure_eigen
from uncert_cli.curvature.eigen import NonFiniteFactorError, robust_eigh
from uncert_cli.errors import UserError


def _check(matrix: torch.Tensor, *, rtol: float = 1e-10) -> None:
    """Reconstructs ``matrix`` from orthonormal eigenvectors and ascending eigenvalues ≥ 0."""
    e = robust_eigh(matrix, what="test")
    a = matrix.double()
    lam, u = e.eigenvalues, e.eigenvectors
    n = a.shape[0]
    assert lam.dtype == torch.float64 and lam.shape == (n,) and u.shape == (n, n)
    assert bool((lam >= 0).all()) and bool((lam[1:] >= lam[:-1]).all())
    assert torch.allclose(u.T @ u, torch.eye(n, dtype=torch.float64), atol=1e-10)
    scale = max(float(a.abs().max()), 1e-300)
    assert float((u @ torch.diag(lam) @ u.T - a).abs().max()) <= rtol * scale * n


def _psd(n: int, rank: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, rank, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x @ x.T


def test_all_zero_factor() -> None:
    e = robust_eigh(torch.zeros(7, 7), what="test")
    assert torch.equal(e.eigenvalues, torch.zeros(7, dtype=torch.float64))
    assert torch.equal(e.eigenvectors, torch.eye(7, dtype=torch.float64)) and e.repair is None


def test_rank_one_factor() -> None:
    v = torch.arange(1.0, 9.0, dtype=torch.float64)
    _check(torch.outer(v, v))
    lam = robust_eigh(torch.outer(v, v), what="test").eigenvalues
    assert lam[-1] == pytest.approx(float(v @ v)) and float(lam[:-1].abs().max()) < 1e-10 * float(v @ v)


def test_many_equal_eigenvalues_and_a_zero_block() -> None:
    """Small fits: most eigenvalues exactly 0 (padding rows of a conv factor), the rest repeated."""
    a = torch.zeros(60, 60, dtype=torch.float64)
    a[:10, :10] = 3.0 * torch.eye(10, dtype=torch.float64)
    a[10:14, 10:14] = _psd(4, 2)
    _check(a)
    _check(torch.eye(50) * 2.5)


def test_entries_near_1e30_in_float32() -> None:
    """Large activations: eigh on the raw float64 values is fine here, but the rescaling keeps the
    eigenvalues finite and accurate even when squares of the entries would overflow."""
    a = _psd(12, 5).float() * 1e30
    assert bool(torch.isfinite(a).all())
    _check(a, rtol=1e-6)  # float32 input: its own round-off
    huge = _psd(6, 3) * 1e300  # float64 entries whose squares overflow
    e = robust_eigh(huge, what="test")
    assert bool(torch.isfinite(e.eigenvalues).all()) and float(e.eigenvalues[-1]) > 1e299


def test_asymmetric_round_off_is_symmetrised() -> None:
    a = _psd(9, 9)
    a[0, 1] += 1e-9
    _check(a, rtol=1e-9)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_is_a_user_error_naming_the_layer_and_suggesting_float64(bad: float) -> None:
    a = _psd(5, 5).float()
    a[2, 3] = bad
    with pytest.raises(NonFiniteFactorError, match=r"layer 'fc2'.*refit with dtype float64") as info:
        robust_eigh(a, what="the input factor of layer 'fc2'")
    assert isinstance(info.value, UserError) and info.value.mentions == ("dtype",)  # the CLI shows --dtype
    with pytest.raises(NonFiniteFactorError, match="check the model's weights"):  # float64 already
        robust_eigh(a.double(), what="the input factor of layer 'fc2'")


def test_failed_eigh_is_retried_with_jitter_and_then_other_drivers(monkeypatch) -> None:
    """LAPACK's non-convergence is data dependent and rare on small matrices, so the first calls of
    torch's eigh are made to fail the way it does (``_LinAlgError``) to walk the fallback chain."""
    real_eigh = torch.linalg.eigh
    a = _psd(30, 4)
    for failures, repair in ((1, "jitter 1e-12·trace/n"), (3, "jitter 1e-06·trace/n"),
                             (4, "scipy eigh (evr)")):
        calls = {"n": 0}

        def flaky(m, *args, _failures=failures, **kwargs):
            calls["n"] += 1
            if calls["n"] <= _failures:
                raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
            return real_eigh(m, *args, **kwargs)

        monkeypatch.setattr(torch.linalg, "eigh", flaky)
        e = robust_eigh(a, what="test")
        assert e.repair == repair
        assert torch.allclose(e.eigenvectors @ torch.diag(e.eigenvalues) @ e.eigenvectors.T, a, atol=1e-8 * float(a.max()))
    monkeypatch.setattr(eigen_module, "_scipy_eigh", lambda m: (_ for _ in ()).throw(ValueError("no")))
    calls["n"] = -100  # every torch attempt fails from here on
    e = robust_eigh(a, what="test")
    assert e.repair == "svd (gesvd)"
    assert torch.allclose(e.eigenvectors @ torch.diag(e.eigenvalues) @ e.eigenvectors.T, a, atol=1e-8 * float(a.max()))


def test_blocks_record_their_repairs(monkeypatch) -> None:
    real_eigh = torch.linalg.eigh
    state = {"fail_next": True}

    def fail_once(m, *args, **kwargs):
        if state["fail_next"]:
            state["fail_next"] = False
            raise torch.linalg.LinAlgError("linalg.eigh: The algorithm failed to converge")
        return real_eigh(m, *args, **kwargs)

    monkeypatch.setattr(torch.linalg, "eigh", fail_once)
    kron = KroneckerBlock("fc1", ("fc1.weight",), ((3, 4),), _psd(4, 2).float(), _psd(3, 3).float())
    dense = DenseBlock("fc1+fc2", ("fc1.weight",), ((2, 2),), _psd(4, 4))

    from uncert_cli.curvature.blocks import Curvature

    repairs = ensure_eigen(Curvature([kron, dense], 10, "classification", "kfac", "exact"))
    assert repairs == {"fc1": ("input factor: jitter 1e-12·trace/n",)}
    assert kron.eigen().input_eigenvalues.dtype == torch.float32


def test_nan_factor_in_a_block_names_the_layer() -> None:
    a = _psd(4, 4).float()
    a[0, 0] = math.nan
    block = KroneckerBlock("layer4.1.conv2", ("layer4.1.conv2.weight",), ((3, 4),), a, _psd(3, 3).float())
    with pytest.raises(UserError, match=r"input factor of layer 'layer4.1.conv2' contains NaN or inf.*float64"):
        block.eigen()
