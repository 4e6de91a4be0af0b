"""KFAC factors: exactness where KFAC is exact, and agreement with BackPACK and curvlinops."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.reference.cases import Case
from tests.reference.ggn import explicit_ggn
from tests.reference.indices import restrict, waug_index
from tests.reference.models import mlp, targets
from uncert_cli.curvature import DiagonalBlock, KroneckerBlock, compute_curvature


def _kron_blocks(curv) -> dict[str, KroneckerBlock]:
    return {b.module: b for b in curv.blocks if isinstance(b, KroneckerBlock)}


@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize("bias", [True, False])
def test_kfac_exact_for_one_example(task: str, bias: bool) -> None:
    """One example, 2-D Linear inputs: J_wᵀ v = g ⊗ a, so Σ_k (g⊗a)(g⊗a)ᵀ = G ⊗ A exactly."""
    layers: list[nn.Module] = [nn.Linear(3, 4, bias=bias), nn.Linear(4, 2, bias=bias), nn.Linear(2, 3, bias=bias)]
    model = nn.Sequential(*layers).double()
    x = torch.randn(1, 3, dtype=torch.float64)
    y = targets(task, 1, 3)
    ggn = explicit_ggn(model, x, task)
    curv = compute_curvature(model, [(x, y)], method="kfac", task=task)
    assert len(curv.blocks) == 3
    for block in curv.blocks:
        assert isinstance(block, KroneckerBlock)
        torch.testing.assert_close(
            torch.kron(block.output_factor, block.input_factor), restrict(ggn, waug_index(model, block.module)),
            rtol=1e-9, atol=1e-12,
        )


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
def test_kfac_matches_backpack_kflr() -> None:
    backpack = pytest.importorskip("backpack")
    from backpack.extensions import KFLR

    model = nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 4), nn.Sigmoid(), nn.Linear(4, 3)).double()
    x = torch.randn(8, 5, dtype=torch.float64)
    y = targets("classification", 8, 3)
    curv = compute_curvature(model, [(x, y)], method="kfac")

    bp_model = backpack.extend(model)
    loss_fn = backpack.extend(nn.CrossEntropyLoss(reduction="mean"))
    loss = loss_fn(bp_model(x), y)
    with backpack.backpack(KFLR()):
        loss.backward()
    blocks = _kron_blocks(curv)
    for name in ["0", "2", "4"]:
        layer = model.get_submodule(name)
        block = blocks[name]
        G_w, A_w = layer.weight.kflr  # BackPACK: weight -> [G, A], A without the bias column
        (G_b,) = layer.bias.kflr
        I = layer.in_features
        torch.testing.assert_close(block.output_factor, G_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(block.output_factor, G_b, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(block.input_factor[:I, :I], A_w, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(block.input_factor[:I, I], x_mean_input(model, x, name), rtol=1e-9, atol=1e-12)
        assert block.input_factor[I, I].item() == pytest.approx(1.0)


def x_mean_input(model: nn.Module, x: Tensor, name: str) -> Tensor:
    """Mean input of a submodule over the batch (the bias column of A)."""
    seen: list[Tensor] = []
    h = model.get_submodule(name).register_forward_hook(lambda m, a, o: seen.append(a[0].detach()))
    with torch.no_grad():
        model(x)
    h.remove()
    return seen[0].mean(0)


def _curvlinops_factors(model, units, loss_fn, data, fisher_type, mc_samples=1):
    from curvlinops import KFACLinearOperator

    params = [p for u in units for p in model.get_submodule(u).parameters()]
    op = KFACLinearOperator(
        model,
        loss_fn,
        params,
        data,
        fisher_type=fisher_type,
        mc_samples=mc_samples,
        kfac_approx="expand",
        separate_weight_and_bias=False,
        check_deterministic=False,
        seed=2147483647,
    )
    op.compute_kronecker_factors()
    return op._input_covariances, op._gradient_covariances


CL_FISHER = {"exact": "type-2", "mc": "mc", "empirical": "empirical"}


@pytest.mark.parametrize("fisher_type", ["exact", "mc", "empirical"])
@pytest.mark.parametrize("ref_case", ["mlp-cls", "mlp-reg", "cnn-cls", "cnn-reg", "sequence", "sequence-reg"],
                         indirect=True)
def test_kfac_matches_curvlinops(ref_case: Case, fisher_type: str) -> None:
    pytest.importorskip("curvlinops")
    model, x, y, task = ref_case.model, ref_case.x, ref_case.y, ref_case.task
    data = [(x[:4], y[:4]), (x[4:], y[4:])]
    mc = 3 if fisher_type == "mc" else 1
    gen = torch.Generator().manual_seed(2147483647)
    curv = compute_curvature(model, data, method="kfac", task=task, fisher_type=fisher_type, mc_samples=mc, generator=gen)
    blocks = _kron_blocks(curv)
    if task == "classification":
        loss_fn, g_scale = nn.CrossEntropyLoss(reduction="mean"), 1.0
    else:
        # Sum-reduced MSE is 2 × our ½‖f−y‖² per example (Hessian 2I, gradient 2(f−y), so the
        # empirical Fisher is 4×) and curvlinops does not average G over N for reduction="sum".
        factor = 4 if fisher_type == "empirical" else 2
        loss_fn, g_scale = nn.MSELoss(reduction="sum"), 1.0 / (factor * x.shape[0])
    A_cl, G_cl = _curvlinops_factors(model, list(blocks), loss_fn, data, CL_FISHER[fisher_type], mc)
    assert set(A_cl) == set(blocks)
    for name, block in blocks.items():
        torch.testing.assert_close(block.input_factor, A_cl[name], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(block.output_factor, G_cl[name] * g_scale, rtol=1e-9, atol=1e-12)


def _rel(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("method", ["kfac", "diag"])
def test_mc_converges_to_exact(method: str) -> None:
    model = mlp()
    x = torch.randn(16, 4, dtype=torch.float64)
    y = targets("classification", 16, 3)
    exact = compute_curvature(model, [(x, y)], method=method)

    def mc_error(k: int) -> float:
        gen = torch.Generator().manual_seed(1)
        mc = compute_curvature(model, [(x, y)], method=method, fisher_type="mc", mc_samples=k, generator=gen)
        errs = []
        for be, bm in zip(exact.blocks, mc.blocks):
            if isinstance(be, KroneckerBlock):
                errs.append(_rel(bm.output_factor, be.output_factor))
                torch.testing.assert_close(bm.input_factor, be.input_factor)  # A does not depend on labels
            else:
                assert isinstance(be, DiagonalBlock)
                errs += [_rel(dm, de) for dm, de in zip(bm.diagonal, be.diagonal)]
        return max(errs)

    e1, e1000 = mc_error(1), mc_error(1000)
    assert e1000 < 0.3 * e1
    assert e1000 < 0.1
