"""Pruning scores against dense references; the selection is exactly the lowest-key weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tests.reference.small_posterior import dense_hessian_diag, dense_variances, small
from uncert_cli.analysis.pruning import (
    apply_masks,
    compare_to_baseline,
    evaluate_pruning,
    score_weights,
    select,
)
from uncert_cli.errors import UserError
from uncert_cli.posterior import LaplacePosterior

TAU = 2.0


@pytest.fixture
def post():
    s = small()
    return s, LaplacePosterior(s.curvature, s.model, prior_precision=TAU)


def _dense_scores(s, criterion: str) -> dict[str, np.ndarray]:
    var = dense_variances(s, TAU)
    hess = dense_hessian_diag(s)
    params = {n: p.detach().numpy() for n, p in s.model.named_parameters()}
    out = {}
    for name in ("fc1.weight", "fc2.weight"):  # biases are not candidates
        mu = params[name]
        out[name] = {
            "snr": np.abs(mu) / np.sqrt(var[name]),
            "variance-ratio": var[name] * TAU,
            "obd": 0.5 * mu**2 * hess[name],
            "magnitude": np.abs(mu),
        }[criterion]
    return out


@pytest.mark.parametrize("criterion", ["snr", "variance-ratio", "obd", "magnitude"])
def test_scores_match_dense_references(post, criterion: str) -> None:
    s, p = post
    scored = score_weights(p, criterion)
    assert [x.param_name for x in scored.params] == ["fc1.weight", "fc2.weight"]
    dense = _dense_scores(s, criterion)
    for x in scored.params:
        np.testing.assert_allclose(x.score.numpy(), dense[x.param_name].reshape(-1), rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("criterion", ["snr", "variance-ratio", "obd", "magnitude"])
@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_selection_is_exactly_the_lowest_keys(post, criterion: str, fraction: float) -> None:
    s, p = post
    dense = _dense_scores(s, criterion)
    flat = np.concatenate([dense["fc1.weight"].reshape(-1), dense["fc2.weight"].reshape(-1)])
    keys = -flat if criterion == "variance-ratio" else flat  # variance-ratio prunes the highest
    k = int(round(fraction * flat.size))
    expected = np.zeros(flat.size, dtype=bool)
    expected[np.argsort(keys, kind="stable")[:k]] = True
    sel = select(score_weights(p, criterion), fraction, top=100)
    got = np.concatenate([sel.masks["fc1.weight"].numpy().reshape(-1), sel.masks["fc2.weight"].numpy().reshape(-1)])
    np.testing.assert_array_equal(got, expected)
    assert sel.pruned == k == sum(c.pruned for c in sel.counts)
    assert sel.total_candidates == 18
    listed = [c.score for c in sel.candidates]
    assert len(listed) == k
    assert listed == sorted(listed, reverse=criterion == "variance-ratio")
    if k:  # every listed entry points at the weight whose score it shows
        first = sel.candidates[0]
        assert dense[first.param_name][first.index] == pytest.approx(first.score, rel=1e-9)
        assert abs(first.mean) / first.std == pytest.approx(first.snr)


def test_top_limits_the_list_not_the_masks(post) -> None:
    _, p = post
    sel = select(score_weights(p, "snr"), 0.5, top=3)
    assert len(sel.candidates) == 3 and sel.pruned == 9


def test_apply_masks_zeroes_only_the_masked_entries(post) -> None:
    s, p = post
    sel = select(score_weights(p, "magnitude"), 0.5)
    state = s.model.state_dict()
    pruned = apply_masks(state, sel.masks)
    for name, value in pruned.items():
        if name in sel.masks:
            assert torch.all(value[sel.masks[name]] == 0)
            assert torch.equal(value[~sel.masks[name]], state[name][~sel.masks[name]])
        else:
            assert torch.equal(value, state[name])


def test_bad_criterion_and_fraction_are_user_errors(post) -> None:
    _, p = post
    with pytest.raises(UserError, match="criterion"):
        score_weights(p, "random")
    with pytest.raises(UserError, match="between 0 and 1"):
        select(score_weights(p, "snr"), 1.5)


def test_evaluation_matches_a_direct_forward_pass(post) -> None:
    s, p = post
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 2, (40,), generator=g)
    batches = lambda: [(x[:25], y[:25]), (x[25:], y[25:])]  # noqa: E731
    ev = evaluate_pruning(p, batches, [0.5, 0.0], dataset="toy", split="test", examples=40)
    assert [pt.fraction for pt in ev.points[:2]] == [0.0, 0.5]
    assert len(ev.points) == 8
    with torch.no_grad():
        out = s.model(x)
    assert ev.unpruned.nll == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-9)
    assert ev.point("snr", 0.0).nll == pytest.approx(ev.unpruned.nll, rel=1e-12)
    # the pruned network by hand
    masks = select(score_weights(p, "obd"), 0.5).masks
    model = type(s.model)(**{"in_features": 4, "hidden": [3], "out_features": 2}).double()
    model.load_state_dict(apply_masks(s.model.state_dict(), masks))
    with torch.no_grad():
        out = model(x)
    point = ev.point("obd", 0.5)
    assert point.nll == pytest.approx(float(F.cross_entropy(out, y)), rel=1e-9)
    assert point.accuracy == pytest.approx(float((out.argmax(-1) == y).double().mean()))
    assert point.pruned == 9
    # the model itself was not modified by the evaluation
    assert torch.equal(s.model.fc1.weight, p.map_parameters["fc1.weight"])
    comparisons = {c.criterion: c for c in compare_to_baseline(ev)}
    assert set(comparisons) == {"snr", "variance-ratio", "obd"}
    acc_diff = np.mean([ev.point("obd", f).accuracy - ev.point("magnitude", f).accuracy for f in (0.0, 0.5)])
    assert comparisons["obd"].mean_accuracy_difference == pytest.approx(acc_diff)


class _TrailingOne(torch.nn.Module):
    """A 4 -> 3 classifier whose logits come out as (B, 3, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x).unsqueeze(-1)


def test_evaluate_model_flattens_trailing_unit_dimension():
    """(B, C, 1) logits are scored over the C classes, not the trailing 1 (argmax of which is always 0)."""
    from uncert_cli.analysis.pruning import evaluate_model

    torch.manual_seed(0)
    model = _TrailingOne().double()
    x = torch.randn(30, 4, dtype=torch.float64)
    with torch.no_grad():
        logits = model.fc(x)
    y = logits.argmax(1)  # labels the network gets right, so the accuracy is 1
    y[:5] = (y[:5] + 1) % 3  # and 5 it gets wrong
    params = {n: p.detach() for n, p in model.named_parameters()}
    metrics = evaluate_model(model, params, lambda: [(x, y)], "classification")
    assert metrics.accuracy == pytest.approx(25 / 30)
    assert metrics.nll == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-9)


def test_evaluate_model_refuses_labels_beyond_the_output_width():
    from uncert_cli.analysis.pruning import evaluate_model

    model = _TrailingOne().double()
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    params = {n: p.detach() for n, p in model.named_parameters()}
    with pytest.raises(UserError, match=r"label 3 .* \(6, 3, 1\) holds 3 classes"):
        evaluate_model(model, params, lambda: [(x, y)], "classification")
