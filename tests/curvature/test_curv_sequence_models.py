"""Recurrent, attention and embedding models: every block against the explicit float64 GGN.

Recurrent layers run on plain tensor operations during the curvature pass
(:mod:`uncert_cli.curvature.recurrent`); their exact diagonal comes from per-example gradients
through time.  The attention layers' packed in-projection and the embedding get exact diagonals;
Linear layers on ``(batch, tokens, features)`` inputs get Kronecker factors with positions summed.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from tests.reference.ggn import explicit_ggn
from tests.reference.indices import param_diagonal
from uncert_cli.curvature import DiagonalBlock, compute_curvature
from uncert_cli.curvature.plain_kernels import plain_kernels
from uncert_cli.curvature.recurrent import recurrent_forward


class RecurrentClassifier(nn.Module):
    def __init__(self, cell: type[nn.RNNBase], layers: int, bidirectional: bool, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.rnn = cell(3, 4, num_layers=layers, bidirectional=bidirectional, batch_first=batch_first)
        self.head = nn.Linear(4 * (2 if bidirectional else 1), 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        last = out[:, -1] if self.batch_first else out[-1]
        return self.head(last)


class AttentionClassifier(nn.Module):
    def __init__(self, batch_first: bool) -> None:
        super().__init__()
        self.batch_first = batch_first
        self.attn = nn.MultiheadAttention(4, 2, batch_first=batch_first)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = x if self.batch_first else x.transpose(0, 1)
        y, _ = self.attn(q, q, q)
        return self.head(y.mean(1 if self.batch_first else 0))


class EncoderClassifier(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x).mean(1))


class BagOfEmbeddings(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embedding = nn.Embedding(9, 3)
        self.head = nn.Linear(3, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.embedding(ids).mean(1))


RECURRENT = [
    (cell, layers, bidirectional, batch_first)
    for cell, layers, bidirectional, batch_first in itertools.product(
        [nn.LSTM, nn.GRU, nn.RNN], [1, 2], [False, True], [True, False]
    )
    if layers == 2 or not bidirectional  # keep the grid small: the hard cases are 2-layer bidirectional
]


def _check_every_block(model: nn.Module, x: torch.Tensor, method: str) -> None:
    torch.manual_seed(1)
    y = torch.randint(0, 3, (x.shape[0],))
    ggn = explicit_ggn(model, x, "classification")
    curv = compute_curvature(model, [(x[:3], y[:3]), (x[3:], y[3:])], method=method)
    covered = {n for b in curv.blocks for n in b.param_names}
    assert covered == {n for n, _ in model.named_parameters()}
    checked = 0
    for block in curv.blocks:
        if isinstance(block, DiagonalBlock):
            for name, diag in zip(block.param_names, block.diagonal):
                torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-8, atol=1e-12)
                checked += 1
        else:  # Kronecker: its diagonal is diag(G) ⊗ diag(A); exact only in the one-position case
            assert block.module == "head" or method == "kfac"
    assert checked > 0


@pytest.mark.parametrize("cell,layers,bidirectional,batch_first", RECURRENT)
def test_recurrent_blocks_equal_the_explicit_ggn(cell, layers, bidirectional, batch_first):
    torch.manual_seed(0)
    model = RecurrentClassifier(cell, layers, bidirectional, batch_first).double()
    _check_every_block(model, torch.randn(5, 4, 3, dtype=torch.float64), "diag")


@pytest.mark.parametrize("method", ["diag", "kfac"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_attention_blocks_equal_the_explicit_ggn(method, batch_first):
    torch.manual_seed(0)
    model = AttentionClassifier(batch_first).double()
    _check_every_block(model, torch.randn(5, 4, 4, dtype=torch.float64), method)


@pytest.mark.parametrize("method", ["diag", "kfac"])
def test_encoder_layer_blocks_equal_the_explicit_ggn(method):
    torch.manual_seed(0)
    model = EncoderClassifier().double()
    _check_every_block(model, torch.randn(5, 4, 4, dtype=torch.float64), method)


def test_embedding_rows_equal_the_explicit_ggn():
    torch.manual_seed(0)
    model = BagOfEmbeddings().double()
    ids = torch.randint(0, 9, (5, 4))
    _check_every_block(model, ids, "diag")


def test_lstm_kfac_runs_with_a_recurrent_diagonal():
    torch.manual_seed(0)
    model = RecurrentClassifier(nn.LSTM, 2, True, True).double()
    _check_every_block(model, torch.randn(5, 4, 3, dtype=torch.float64), "kfac")


@pytest.mark.parametrize("cell", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("batched", [True, False])
def test_plain_recurrent_forward_is_the_module(cell, batched):
    torch.manual_seed(0)
    kwargs = {"proj_size": 2} if cell is nn.LSTM else {}
    module = cell(3, 4, num_layers=2, bidirectional=True, batch_first=True, **kwargs).double().eval()
    x = torch.randn(2, 5, 3, dtype=torch.float64) if batched else torch.randn(5, 3, dtype=torch.float64)
    expected, got = module(x), recurrent_forward(module, x)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=1e-12)
    states = zip(got[1], expected[1]) if cell is nn.LSTM else [(got[1], expected[1])]
    for a, b in states:
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_plain_recurrent_forward_refuses_the_ranks_the_module_refuses():
    module = nn.GRU(3, 4, batch_first=True)
    x = torch.randn(2, 1, 5, 3)  # a grey-image reading of sequence data
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        module(x)
    with pytest.raises(ValueError, match="Expected input to be 2D or 3D, got 4D"):
        recurrent_forward(module, x)


def test_plain_kernels_allow_forward_mode_and_restore_the_model():
    torch.manual_seed(0)
    model = RecurrentClassifier(nn.LSTM, 1, False, True).eval()
    x = torch.randn(2, 4, 3)
    params = {k: v.detach() for k, v in model.named_parameters()}
    tangents = {k: torch.randn_like(v) for k, v in params.items()}

    def f(p):
        return torch.func.functional_call(model, p, (x,))

    with plain_kernels(model) as affected:
        assert affected == ["rnn"]
        out, jvp_out = torch.func.jvp(f, (params,), (tangents,))
    assert "forward" not in vars(model.rnn)  # the class's fused forward is back
    torch.testing.assert_close(out, model(x))
    eps = 1e-3  # a finite difference in float32 agrees with the forward-mode derivative
    shifted = {k: v + eps * tangents[k] for k, v in params.items()}
    fd = (f(shifted) - f(params)) / eps
    torch.testing.assert_close(jvp_out, fd, rtol=0.05, atol=2e-2)


class SharedRecurrentClassifier(nn.Module):
    """One GRU reads two halves of the sequence (two calls: the per-example gradient sums both)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, _ = self.rnn(x[:, :2])
        second, _ = self.rnn(x[:, 2:])
        return self.head(torch.cat([first[:, -1], second[:, -1]], dim=1))


class ProjectedLSTMClassifier(RecurrentClassifier):
    def __init__(self) -> None:
        super().__init__(nn.LSTM, 1, False, True)
        self.rnn = nn.LSTM(3, 4, batch_first=True, proj_size=2)
        self.head = nn.Linear(2, 3)


def _unit_accumulator(model: nn.Module) -> type:
    from uncert_cli.curvature.engine import _make_accumulators
    from uncert_cli.curvature.hooks import Capture
    from uncert_cli.curvature.subset import select_units

    units = [u for u in select_units(model, "all") if u.name == "rnn"]
    (acc,) = _make_accumulators(units, "diag", torch.float64, torch.device("cpu"), Capture(units, [False], [None]))
    return type(acc)


def test_recurrent_modules_take_the_gate_gradient_path():
    from uncert_cli.curvature.recurrent_diag import RecurrentDiagAccumulator

    assert _unit_accumulator(RecurrentClassifier(nn.LSTM, 2, True, True)) is RecurrentDiagAccumulator
    assert _unit_accumulator(SharedRecurrentClassifier()) is RecurrentDiagAccumulator
    # the projection's weight is not a gate weight: the generic per-example path covers it
    assert _unit_accumulator(ProjectedLSTMClassifier()) is not RecurrentDiagAccumulator


def test_a_recurrent_module_called_twice_sums_both_uses():
    torch.manual_seed(0)
    _check_every_block(SharedRecurrentClassifier().double(), torch.randn(5, 5, 3, dtype=torch.float64), "diag")


def test_a_projected_lstm_keeps_the_generic_path_exact():
    torch.manual_seed(0)
    _check_every_block(ProjectedLSTMClassifier().double(), torch.randn(5, 4, 3, dtype=torch.float64), "kfac")


def test_gates_are_recorded_inside_an_outer_plain_kernels_block():
    """Structured methods run the engine inside their own plain_kernels block; the engine's recorder
    must still receive the gates (else the recurrent block would silently be zero)."""
    torch.manual_seed(0)
    model = RecurrentClassifier(nn.GRU, 2, True, False).double()
    with plain_kernels(model):
        _check_every_block(model, torch.randn(5, 4, 3, dtype=torch.float64), "diag")
        assert vars(model.rnn)["forward"].plain_recurrent  # the outer block's forward is back
    assert "forward" not in vars(model.rnn)


class PerExampleLoop(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(3, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.stack([self.rnn(seq)[0][-1] for seq in x]))  # unbatched (T, F) calls


def test_a_recurrent_layer_called_per_example_is_refused_with_the_fix():
    from uncert_cli.core.errors import UserError

    torch.manual_seed(0)
    x, y = torch.randn(4, 5, 3), torch.randint(0, 3, (4,))
    with pytest.raises(UserError, match="call it on the whole batch"):
        compute_curvature(PerExampleLoop(), [(x, y)], method="diag")


@pytest.mark.parametrize("kwargs", [{"bias": False}, {"nonlinearity": "relu"}])
def test_gate_gradient_path_without_biases_and_with_relu(kwargs):
    torch.manual_seed(0)
    cell = nn.GRU if "bias" in kwargs else nn.RNN
    model = RecurrentClassifier(cell, 1, False, True)
    model.rnn = cell(3, 4, batch_first=True, **kwargs)
    _check_every_block(model.double(), torch.randn(5, 4, 3, dtype=torch.float64), "diag")


class InitialStateClassifier(nn.Module):
    """The GRU starts from a state another layer computes (the first step's h_{t-1} is not zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.init = nn.Linear(3, 4)
        self.rnn = nn.GRU(3, 4, batch_first=True)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0 = torch.tanh(self.init(x.mean(1))).unsqueeze(0)
        out, _ = self.rnn(x, h0)
        return self.head(out[:, -1])


def test_gate_gradient_path_from_a_computed_initial_state():
    torch.manual_seed(0)
    _check_every_block(InitialStateClassifier().double(), torch.randn(5, 4, 3, dtype=torch.float64), "diag")
