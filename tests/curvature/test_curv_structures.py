"""Curvature of full / lowrank / ekfac / kfac-diag against explicit float64 GGNs (tiny networks)."""

from __future__ import annotations

import pytest
import torch

from tests.reference.cases import STRUCTURE_CASES, Case, case
from tests.reference.dense import block_index, block_matrix, curvature_matrix, restrict_to_block
from tests.reference.models import NormNet
from uncert_cli.curvature import compute_curvature
from uncert_cli.curvature.blocks import DiagonalBlock, EKFACBlock, KronDiagBlock
from uncert_cli.curvature.structured import compute_structured_curvature
from uncert_cli.errors import UserError


def fit(c: Case, method: str, **kw):
    return compute_structured_curvature(c.model, c.source(), method=method, task=c.task, **kw)


@pytest.mark.parametrize("ref_case", STRUCTURE_CASES, indirect=True)
def test_full_equals_explicit_ggn(ref_case):
    c = ref_case
    curv = fit(c, "full")
    assert len(curv.blocks) == 1 and curv.n_data == c.x.shape[0]
    torch.testing.assert_close(curvature_matrix(curv, c.model, c.names), c.ggn(), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("ref_case", ["mlp-cls", "mlp-reg", "shared"], indirect=True)
def test_lowrank_at_full_rank_equals_full(ref_case):
    c = ref_case
    P = sum(p.numel() for p in c.model.parameters())
    curv = fit(c, "lowrank", rank=P)
    block = curv.blocks[0]
    torch.testing.assert_close(block.eigenvalues, torch.linalg.eigvalsh(c.ggn()).flip(0).clamp_min(0), atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(block_matrix(block), c.ggn(), atol=1e-10, rtol=1e-8)


def test_lowrank_keeps_the_exact_diagonal_and_top_eigenvalues():
    c = case("mlp-cls")
    curv = fit(c, "lowrank", rank=4, power_iters=4)
    block = curv.blocks[0]
    exact = torch.linalg.eigvalsh(c.ggn()).flip(0)[:4]
    torch.testing.assert_close(block.eigenvalues, exact, rtol=1e-3, atol=1e-8)
    low_diag = block.eigenvectors.square() @ block.eigenvalues
    kept = block.diagonal > 0  # where the clamp at 0 is inactive
    assert kept.float().mean() > 0.9
    torch.testing.assert_close(torch.diagonal(block_matrix(block))[kept], torch.diagonal(c.ggn())[kept])
    assert torch.all(low_diag[~kept] >= torch.diagonal(c.ggn())[~kept] - 1e-12)


@pytest.mark.parametrize("ref_case", STRUCTURE_CASES, indirect=True)
def test_ekfac_eigenvalues_are_the_rotated_ggn_diagonal(ref_case):
    c = ref_case
    curv = fit(c, "ekfac")
    ekfac = [b for b in curv.blocks if isinstance(b, EKFACBlock)]
    assert ekfac
    for b in ekfac:
        U = torch.kron(b.eigen.output_eigenvectors, b.eigen.input_eigenvectors)
        rotated = torch.diagonal(U.T @ restrict_to_block(c.ggn(), c.model, c.names, b) @ U)
        torch.testing.assert_close(b.eigenvalues.reshape(-1), rotated, atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("ref_case", STRUCTURE_CASES, indirect=True)
@pytest.mark.parametrize("rank", [1, 6])
def test_kfac_diag_diagonal_equals_the_exact_ggn_diagonal(ref_case, rank):
    c = ref_case
    curv = fit(c, "kfac-diag", rank=rank)
    diag = torch.diagonal(c.ggn())
    for b in curv.blocks:
        idx = block_index(c.model, c.names, b)
        approx = torch.diagonal(block_matrix(b))
        if isinstance(b, KronDiagBlock):
            assert b.rank_indices.shape[0] == min(rank, b.diagonal.numel())
            kept = b.diagonal.reshape(-1) > 0
            # the clamp D >= 0 is the only place the diagonal may differ (and then only upwards)
            torch.testing.assert_close(approx[kept], diag[idx][kept], atol=1e-12, rtol=1e-9)
            assert torch.all(approx[~kept] >= diag[idx][~kept] - 1e-12)
        else:
            torch.testing.assert_close(approx, diag[idx], atol=1e-12, rtol=1e-9)


@pytest.mark.parametrize("method", ["full", "lowrank", "ekfac", "kfac-diag"])
def test_every_method_honours_the_subset(method):
    c = case("mlp-cls")
    last = fit(c, method, subset="last-layer", rank=3)
    named = fit(c, method, subset="2", rank=3)
    for curv in (last, named):
        assert [n for b in curv.blocks for n in b.param_names] == ["2.weight", "2.bias"]
    torch.testing.assert_close(block_matrix(last.blocks[0]), block_matrix(named.blocks[0]))
    if method == "full":  # the sub-block of the explicit GGN over the last layer
        torch.testing.assert_close(block_matrix(last.blocks[0]), c.ggn(["2.weight", "2.bias"]), atol=1e-12, rtol=1e-10)
    with pytest.raises(UserError, match="unknown module"):
        fit(c, method, subset="nope")


def test_full_refuses_above_the_memory_cap_with_the_size():
    with pytest.raises(UserError, match=r"2·P²·8 bytes.*lowrank"):
        fit(case("mlp-cls"), "full", max_bytes=1000)


def test_full_and_lowrank_refuse_other_fisher_types_and_bad_rank():
    with pytest.raises(UserError, match="exact GGN only"):
        fit(case("mlp-cls"), "lowrank", fisher_type="empirical")
    with pytest.raises(UserError, match="rank must be at least 1"):
        fit(case("mlp-cls"), "kfac-diag", rank=0)


def _frobenius(c: Case) -> dict[str, float]:
    exact = c.ggn()
    out = {}
    for method in ("full", "kfac-diag", "ekfac"):
        out[method] = float(torch.linalg.norm(curvature_matrix(fit(c, method, rank=6), c.model, c.names) - exact))
    for method in ("kfac", "diag"):
        curv = compute_curvature(c.model, c.source()(), method=method, task=c.task)
        out[method] = float(torch.linalg.norm(curvature_matrix(curv, c.model, c.names) - exact))
    return {k: v / float(torch.linalg.norm(exact)) for k, v in out.items()}


@pytest.mark.parametrize("ref_case", STRUCTURE_CASES, indirect=True)
def test_frobenius_distance_to_the_exact_ggn(ref_case, capsys):
    d = _frobenius(ref_case)
    with capsys.disabled():
        print(f"\n[frobenius/‖GGN‖] {ref_case.name}: " + ", ".join(f"{k}={v:.4f}" for k, v in d.items()))
    assert d["full"] < 1e-10
    # EKFAC minimises the Frobenius distance over all diagonals in the KFAC eigenbasis (George et al.)
    assert d["ekfac"] <= d["kfac"] + 1e-12


def test_non_kronecker_modules_keep_diagonal_blocks():
    torch.manual_seed(0)
    model = NormNet().double()
    x, y = torch.randint(0, 7, (6, 2)), torch.randint(0, 3, (6,))
    for method in ("ekfac", "kfac-diag"):
        curv = compute_structured_curvature(model, lambda: [(x, y)], method=method, rank=2)
        kinds = {b.module: type(b) for b in curv.blocks}
        assert kinds["ln"] is DiagonalBlock and kinds["emb"] is DiagonalBlock
        assert kinds["fc"] in (EKFACBlock, KronDiagBlock)
