"""Engine behaviour: batching invariance, the reduce hook, subsets, progress, errors, memory."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from tests.reference.models import NormNet, SharedNet, cnn, mlp, targets
from uncert_cli.curvature import (
    Curvature,
    KroneckerBlock,
    compute_curvature,
    estimate_memory,
    loss_backward_vectors,
    supported_structure,
)
from uncert_cli.errors import UserError


def _tensors(curv: Curvature) -> list[Tensor]:
    out: list[Tensor] = []
    for b in curv.blocks:
        out += [b.input_factor, b.output_factor] if isinstance(b, KroneckerBlock) else list(b.diagonal)
    return out


def _batches(x: Tensor, y: Tensor, size: int) -> list[tuple[Tensor, Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, x.shape[0], size)]


def _assert_same(a: Curvature, b: Curvature, tol: float = 1e-10) -> None:
    assert a.n_data == b.n_data
    assert [blk.param_names for blk in a.blocks] == [blk.param_names for blk in b.blocks]
    for ta, tb in zip(_tensors(a), _tensors(b)):
        torch.testing.assert_close(ta, tb, rtol=tol, atol=tol)


@pytest.mark.parametrize("method", ["diag", "kfac"])
@pytest.mark.parametrize("arch", ["cnn", "norm", "shared"])
def test_batching_invariance(method: str, arch: str) -> None:
    model = {"cnn": cnn(), "norm": NormNet().double(), "shared": SharedNet().double()}[arch]
    n = 7
    x = {
        "cnn": torch.randn(n, 2, 4, 4, dtype=torch.float64),
        "norm": torch.randint(0, 7, (n, 2)),
        "shared": torch.randn(n, 4, dtype=torch.float64),
    }[arch]
    y = targets("classification", n, 3)
    runs = [compute_curvature(model, _batches(x, y, bs), method=method) for bs in (1, 3, n)]
    _assert_same(runs[0], runs[2])
    _assert_same(runs[1], runs[2])


@pytest.mark.parametrize("method", ["diag", "kfac"])
def test_reduce_sums_shards(method: str) -> None:
    """Two shards run separately; a reduce callback that adds the other shard's sums (what an
    all-reduce does) gives the single-run result."""
    model = cnn()
    x = torch.randn(8, 2, 4, 4, dtype=torch.float64)
    y = targets("regression", 8, 3)
    full = compute_curvature(model, _batches(x, y, 3), method=method, task="regression")

    captured: list[list[Tensor]] = []
    compute_curvature(model, _batches(x[5:], y[5:], 2), method=method, task="regression",
                      reduce=lambda ts: captured.append([t.clone() for t in ts]))

    def add_other_shard(tensors: list[Tensor]) -> None:
        assert tensors[-1].numel() == 1 and tensors[-1].item() == 5  # example count comes last
        for t, o in zip(tensors, captured[0]):
            t += o

    merged = compute_curvature(model, _batches(x[:5], y[:5], 2), method=method, task="regression", reduce=add_other_shard)
    _assert_same(merged, full)


def test_subsets() -> None:
    model = cnn()
    x = torch.randn(4, 2, 4, 4, dtype=torch.float64)
    y = targets("classification", 4, 3)
    full = compute_curvature(model, [(x, y)], method="kfac")
    last = compute_curvature(model, [(x, y)], method="kfac", subset="last-layer")
    assert [b.module for b in last.blocks] == ["6"]
    _assert_same(last, Curvature([full.blocks[-1]], 4, "classification", "kfac", "exact"))
    some = compute_curvature(model, [(x, y)], method="diag", subset="0, 4")
    assert [b.module for b in some.blocks] == ["0", "4"]
    assert some.num_params == sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in {"0", "4"})
    with pytest.raises(UserError, match="available|list of"):
        compute_curvature(model, [(x, y)], method="diag", subset="0,nope")


def test_last_layer_is_forward_order_not_registration_order() -> None:
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(4, 3)
            self.body = nn.Linear(2, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(torch.tanh(self.body(x)))

    model = Reversed().double()
    x = torch.randn(3, 2, dtype=torch.float64)
    curv = compute_curvature(model, [(x, targets("classification", 3, 3))], method="kfac", subset="last-layer")
    assert [b.module for b in curv.blocks] == ["head"]
    assert estimate_memory(model, "kfac", "last-layer", example_input=x) == (3 * 3 + 5 * 5) * 8


def test_progress_eval_mode_and_flags_restored() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.9), nn.Linear(8, 3)).double().train()
    model[0].weight.requires_grad_(False)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = targets("classification", 10, 3)
    seen: list[int] = []
    a = compute_curvature(model, _batches(x, y, 4), method="kfac", on_batch=seen.append)
    b = compute_curvature(model, _batches(x, y, 4), method="kfac")
    assert seen == [4, 4, 2]
    _assert_same(a, b)  # dropout off: deterministic
    assert model.training and model[1].training
    assert not model[0].weight.requires_grad and model[0].bias.requires_grad


@pytest.mark.parametrize(
    ("task", "y", "match"),
    [
        ("classification", torch.tensor([0, 5]), "label 5"),
        ("classification", torch.tensor([0, 1, 2]), "targets"),
        ("regression", torch.zeros(2, 4, dtype=torch.float64), "must match"),
    ],
)
def test_bad_targets(task: str, y: Tensor, match: str) -> None:
    model = mlp()
    with pytest.raises(UserError, match=match):
        compute_curvature(model, [(torch.randn(2, 4, dtype=torch.float64), y)], method="diag", task=task)


def test_non_finite_output() -> None:
    model = mlp()
    x = torch.randn(4, 4, dtype=torch.float64)
    x[3, 0] = float("nan")
    y = targets("classification", 4, 3)
    with pytest.raises(UserError, match="NaN/inf on batch 1"):
        compute_curvature(model, _batches(x, y, 2), method="kfac")


def test_empty_data() -> None:
    with pytest.raises(UserError, match="empty"):
        compute_curvature(mlp(), [], method="kfac")


def test_supported_structure_and_memory() -> None:
    assert supported_structure(nn.Linear(2, 3)) == "kronecker"
    assert supported_structure(nn.Conv2d(2, 3, 3)) == "kronecker"
    assert supported_structure(nn.Conv2d(2, 4, 3, groups=2)) == "diagonal"
    assert supported_structure(nn.LayerNorm(3)) == "diagonal"
    assert supported_structure(nn.MultiheadAttention(4, 2)) == "diagonal"
    assert supported_structure(nn.ReLU()) is None
    model = cnn()  # conv(2->4,k3) relu pool conv(4->4,k2) grouped conv(4->4,k1,g2) flatten linear(16->3)
    kfac = (4 * 4 + 19 * 19) + (4 * 4 + 17 * 17) + (2 * 4 + 4) + (3 * 3 + 17 * 17)
    assert estimate_memory(model, "kfac", "all") == kfac * 8
    assert estimate_memory(model, "diag", "all") == sum(p.numel() for p in model.parameters()) * 8
    assert estimate_memory(model.float(), "diag", "all") == sum(p.numel() for p in model.parameters()) * 4


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_loss_vectors(task: str) -> None:
    out = torch.randn(5, 4, dtype=torch.float64)
    y = targets(task, 5, 4)
    V = loss_backward_vectors(out, y, "exact", task)
    # The softmax Hessian has rank C − 1: one backward vector per example fewer.
    assert V.shape == ((3, 5, 4) if task == "classification" else (4, 5, 4))
    H = torch.einsum("kbc,kbd->bcd", V, V)
    p = out.softmax(1)
    expected = torch.diag_embed(p) - p[:, :, None] * p[:, None, :] if task == "classification" else torch.eye(4).expand(5, 4, 4)
    torch.testing.assert_close(H, expected.to(H.dtype))
    gen = torch.Generator().manual_seed(0)
    Vmc = loss_backward_vectors(out, y, "mc", task, mc_samples=20000, generator=gen)
    torch.testing.assert_close(torch.einsum("kbc,kbd->bcd", Vmc, Vmc), expected.to(H.dtype), atol=0.03, rtol=0)
    Ve = loss_backward_vectors(out, y, "empirical", task)
    grad_expected = p - torch.nn.functional.one_hot(y, 4) if task == "classification" else out - y
    torch.testing.assert_close(Ve[0], grad_expected.to(H.dtype))


@pytest.mark.parametrize("method", ["diag", "kfac"])
@pytest.mark.parametrize("arch", ["mlp", "cnn", "shared"])
def test_backward_vectors_in_chunks(method: str, arch: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The K backward vectors of a batch propagated one at a time (accumulators see K chunks per
    batch and sum over them) give what one chunk of all K gives."""
    import uncert_cli.curvature.engine as engine

    model = {"mlp": mlp(True), "cnn": cnn(), "shared": SharedNet().double()}[arch]
    x = {"mlp": torch.randn(6, 4), "cnn": torch.randn(6, 2, 4, 4), "shared": torch.randn(6, 4)}[arch].double()
    y = targets("classification", 6, 3)
    whole = compute_curvature(model, _batches(x, y, 4), method=method)
    monkeypatch.setattr(engine, "GRAD_ELEMENTS", 1)
    monkeypatch.setattr(engine, "CONV_GRAD_ELEMENTS", 1)
    chunked = compute_curvature(model, _batches(x, y, 4), method=method)
    _assert_same(chunked, whole)


def test_kfac_on_conv_networks_propagates_one_vector_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """KFAC on a conv net whose other units are eval-mode BatchNorms takes the backward vectors one at a
    time (the exact diagonal all at once), and its factors equal those from all vectors at once."""
    import uncert_cli.curvature.engine as engine
    from tests.curvature.test_curv_conv_paths import ConvBatchNormNet

    torch.manual_seed(0)
    model = ConvBatchNormNet().double().eval()
    x, y = torch.randn(6, 2, 5, 5, dtype=torch.float64), targets("classification", 6, 3)
    sizes: list[int] = []
    real = engine.backprop_vectors

    def recording(out: Tensor, tracked: list[Tensor], V: Tensor, **kwargs: bool) -> list[Tensor]:
        sizes.append(V.shape[0])
        return real(out, tracked, V, **kwargs)

    monkeypatch.setattr(engine, "backprop_vectors", recording)
    compute_curvature(model, _batches(x, y, 4), method="diag")
    assert set(sizes) == {2}  # K = C − 1 = 2 at once
    sizes.clear()
    one = compute_curvature(model, _batches(x, y, 4), method="kfac")
    assert set(sizes) == {1} and len(sizes) == 4  # 2 batches × 2 vectors
    sizes.clear()
    monkeypatch.setattr(engine, "vectors_per_chunk", lambda K, *args, **kwargs: K)
    together = compute_curvature(model, _batches(x, y, 4), method="kfac")
    assert set(sizes) == {2}
    _assert_same(one, together)


def test_conv_networks_propagate_more_vectors_at_once() -> None:
    from uncert_cli.curvature.engine import vectors_per_chunk
    from uncert_cli.curvature.subset import discover_units

    per_vector = 32 * 100_000  # resnet18's unit outputs at batch 32, 3×32×32 inputs
    assert vectors_per_chunk(9, per_vector, discover_units(cnn())) == 9
    assert vectors_per_chunk(9, per_vector, discover_units(mlp(True))) == 1
    assert vectors_per_chunk(9, 600_000, discover_units(mlp(True))) == 2  # 2 + 2 + 2 + 2 + 1
