"""The factored output covariance J Σ Jᵀ (probit, glm) against explicit Jacobians and dense Σ (float64)."""

import math

import pytest
import torch
from torch import nn

from tests.reference.curvatures import diag_curvature, kfac_curvature, random_kfac_curvature
from tests.reference.dense import dense_covariance
from tests.reference.ggn import waug_jacobian
from tests.reference.models import DT
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.posterior.predictive import DEFAULT_SEED, covariance_root, linearised_outputs


def _explicit_cov(model, x, curv, n_eff, taus, mode):
    j = waug_jacobian(model, x, [b.module for b in curv.blocks])  # (B, C, P)
    return torch.einsum("bcp,pq,bdq->bcd", j, dense_covariance(curv, n_eff, taus, mode), j)


def _check(model, x, curv, taus, mode, n_data=20.0):
    post = LaplacePosterior(curv, model, prior_precision=taus, n_data=n_data, prior_mode=mode)
    fast = post.output_covariance(x)
    assert fast is not None, "a Linear/Conv model must take the factored path"
    f, cov = fast
    with torch.no_grad():
        torch.testing.assert_close(f, model(x).reshape(x.shape[0], -1))
    torch.testing.assert_close(cov, _explicit_cov(model, x, curv, n_data, taus, mode), rtol=1e-10, atol=1e-12)
    return post


@pytest.mark.parametrize("mode", ["eigen", "factor"])
@pytest.mark.parametrize("build", [kfac_curvature, diag_curvature])
def test_mlp_full_covariance(mode, build, model, data):
    curv = build(model, data, "classification")
    taus = {"0": 0.5, "2": 1.5, "4": 3.0}
    _check(model, data[:7], curv, taus, mode)


@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_conv_and_strided_conv(mode):
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 2, 3, stride=2), nn.Flatten(), nn.Linear(2 * 2 * 2, 4)
    ).to(DT)
    x = torch.randn(5, 2, 6, 6, dtype=DT)
    curv = random_kfac_curvature(model, ["0", "2", "4"], "classification", n_data=30)
    _check(model, x, curv, {"0": 0.7, "2": 1.1, "4": 2.0}, mode)


@pytest.mark.parametrize("pairs", [True, False], ids=["position-pair-kernel", "rotated-jacobian"])
@pytest.mark.parametrize("mode", ["eigen", "factor"])
def test_both_conv_paths_are_exact(pairs, mode, monkeypatch):
    """Multi-position units take the position-pair kernel or the rotated Jacobian by cost; each is exact
    (padded, strided and dilated convolutions, a whole grid of settings and chunks of examples)."""
    from uncert_cli.posterior import output_covariance as oc

    monkeypatch.setattr(oc, "_prefer_position_pairs", lambda *sizes: pairs)
    monkeypatch.setattr(oc, "CHUNK_ELEMENTS", 1500)  # a few examples per chunk on either path
    torch.manual_seed(5)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 4, 3, stride=2, dilation=2, padding=2), nn.Tanh(),
        nn.Flatten(), nn.Linear(4 * 3 * 3, 3),
    ).to(DT)
    x = torch.randn(7, 2, 6, 6, dtype=DT)
    curv = random_kfac_curvature(model, ["0", "2", "5"], "classification", n_data=30)
    post = _check(model, x, curv, {"0": 0.6, "2": 1.3, "5": 2.1}, mode)
    variants = _grid_variants(post)
    _, covs = post.output_covariances(x, variants)
    for variant, cov in zip(variants, covs):
        explicit = _explicit_cov(model, x, curv, variant.n_data, variant.prior_precision, variant.prior_mode)
        torch.testing.assert_close(cov, explicit, rtol=1e-10, atol=1e-12)


def test_position_pairs_are_chosen_where_they_are_cheaper():
    from uncert_cli.posterior.output_covariance import _prefer_position_pairs

    # resnet18 on 3×32×32, C = 10: layer3 (P = 4) and layer2 (P = 16) by pairs, layer1 (P = 64) and the stem by rows
    assert _prefer_position_pairs(10, 4, 256, 2305, 1) and _prefer_position_pairs(10, 16, 128, 1153, 1)
    assert not _prefer_position_pairs(10, 64, 64, 577, 1) and not _prefer_position_pairs(10, 256, 64, 148, 1)
    # a grid of settings reuses the rotated Jacobian, so the rows win sooner
    assert _prefer_position_pairs(10, 25, 128, 1153, 1) and not _prefer_position_pairs(10, 25, 128, 1153, 40)


class _SharedSequence(nn.Module):
    """A Linear on (B, T, I) sequences, another one called twice (shared weights), mean pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(3, 4)
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        h = torch.tanh(self.embed(x))
        h = torch.tanh(self.shared(h)) + h
        h = torch.tanh(self.shared(h))
        return self.head(h.mean(1))


def test_sequence_inputs_and_a_shared_module():
    torch.manual_seed(4)
    model = _SharedSequence().to(DT)
    x = torch.randn(6, 5, 3, dtype=DT)
    curv = random_kfac_curvature(model, ["embed", "shared", "head"], "classification", n_data=25)
    _check(model, x, curv, {"embed": 0.4, "shared": 0.9, "head": 1.7}, "eigen")


def test_probit_and_glm_use_the_covariance(model, data):
    curv = kfac_curvature(model, data, "classification")
    taus = {"0": 0.5, "2": 1.5, "4": 3.0}
    x = data[:6]
    post = _check(model, x, curv, taus, "factor")
    with torch.no_grad():
        f = model(x)
    cov = _explicit_cov(model, x, curv, 20.0, taus, "factor")
    var = torch.diagonal(cov, dim1=-2, dim2=-1)
    torch.testing.assert_close(
        post.predict(x, "probit"), torch.softmax(f / torch.sqrt(1 + math.pi / 8 * var), -1), rtol=1e-10, atol=1e-12
    )
    # glm: the mean softmax of f + L z with L Lᵀ = J Σ Jᵀ and one set of normals per (S, seed).
    z = torch.randn(40, 3, generator=torch.Generator().manual_seed(DEFAULT_SEED), dtype=DT)
    L = covariance_root(cov)
    expected = torch.softmax(f.unsqueeze(0) + torch.einsum("bck,sk->sbc", L, z), -1).mean(0)
    torch.testing.assert_close(post.predict(x, "glm", samples=40), expected, rtol=1e-9, atol=1e-12)
    # ... and it agrees in distribution with weight-space sampling of the linearised network.
    many = post.predict(x, "glm", samples=20000)
    f0, jd = linearised_outputs(post, x, 20000, torch.Generator().manual_seed(5))
    weight_space = torch.softmax(f0.unsqueeze(0) + jd, -1).mean(0)
    torch.testing.assert_close(many, weight_space, atol=0.01, rtol=0)


def test_covariance_root_handles_singular_matrices():
    v = torch.tensor([[1.0, 2.0, -1.0]], dtype=DT)
    cov = torch.stack([v.T @ v, torch.zeros(3, 3, dtype=DT), torch.eye(3, dtype=DT) * 4])
    L = covariance_root(cov)
    torch.testing.assert_close(L @ L.transpose(-1, -2), cov, atol=1e-10, rtol=0)


def test_norm_layers_take_the_generic_path(data):
    """A LayerNorm block is neither Linear nor Conv: no factored covariance; probit still exact."""
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    from uncert_cli.curvature import compute_curvature

    curv = compute_curvature(model, [(data, torch.randint(0, 3, (30,)))], method="diag")
    post = LaplacePosterior(curv, model, prior_precision=2.0)
    assert post.output_covariance(data[:4]) is None
    probs = post.predict(data[:4], "probit")
    assert torch.allclose(probs.sum(-1), torch.ones(4, dtype=DT))


def test_default_predictive_follows_the_factored_path(model, data):
    from uncert_cli.analysis.attack import ATTACK_KINDS
    from uncert_cli.curvature import compute_curvature
    from uncert_cli.evaluation import default_predictives

    factored = LaplacePosterior(kfac_curvature(model, data, "classification"), model)
    assert default_predictives(factored) == ["map", "probit"]
    assert default_predictives(factored, ATTACK_KINDS) == ["map", "glm"]  # probit cannot be attacked
    torch.manual_seed(6)
    normed = nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.Tanh(), nn.Linear(5, 3)).to(DT)
    curv = compute_curvature(normed, [(data, torch.randint(0, 3, (30,)))], method="kfac")
    assert default_predictives(LaplacePosterior(curv, normed)) == ["map", "glm"]


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode])
def test_predicting_under_no_grad_or_inference_mode(context, model, data):
    curv = kfac_curvature(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=2.0)
    expected = post.predict(data[:5], "probit")
    with context():
        x = data[:5].clone()
        got = post.predict(x, "probit")
        got_glm = post.predict(x, "glm", samples=8)
    torch.testing.assert_close(got, expected)
    assert torch.allclose(got_glm.sum(-1), torch.ones(5, dtype=DT))


class _SequenceFirst(nn.Module):
    """Takes (B, T, I) but runs its Linear layers on (T, B, I), as batch_first=False models do."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = torch.tanh(self.inner(x.transpose(0, 1)))  # (T, B, 4)
        return self.head(h.mean(0))


def test_sequence_first_layers_with_t_equal_b_fall_back():
    """T == B passes the shape check of the factored path; the single-example check catches it."""
    torch.manual_seed(7)
    model = _SequenceFirst().to(DT)
    x = torch.randn(5, 5, 3, dtype=DT)  # B = T = 5
    curv = random_kfac_curvature(model, ["inner", "head"], "classification", n_data=25)
    post = LaplacePosterior(curv, model, prior_precision=1.3)
    assert post.output_covariance(x) is None and not post.has_factored_outputs
    var = torch.diagonal(_explicit_cov(model, x, curv, 25.0, {"inner": 1.3, "head": 1.3}, "eigen"), dim1=-2, dim2=-1)
    with torch.no_grad():
        f = model(x)
    torch.testing.assert_close(post.predict(x, "probit"), torch.softmax(f / torch.sqrt(1 + math.pi / 8 * var), -1))


def test_chunks_over_examples_give_the_same_covariance(model, data, monkeypatch):
    from uncert_cli.posterior import output_covariance as oc

    curv = kfac_curvature(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=0.8)
    whole = post.output_covariance(data)
    monkeypatch.setattr(oc, "OUTPUT_ROWS", 7)  # 3 outputs -> 2 examples per backward
    chunked = LaplacePosterior(curv, model, prior_precision=0.8).output_covariance(data)
    torch.testing.assert_close(chunked[0], whole[0])
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-14)


def test_backward_chunks_are_bounded_by_the_vectors_at_the_unit_outputs(monkeypatch):
    """C vectors per example reach every unit output: the examples per backward shrink with the unit outputs
    (resnet18 at 224×224 would otherwise hold 100 GB for 500 examples), and the chunks give the same J Σ Jᵀ."""
    from uncert_cli.posterior import output_covariance as oc

    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).to(DT)
    x = torch.randn(9, 2, 5, 5, dtype=DT)
    curv = random_kfac_curvature(model, ["0", "3"], "classification", n_data=30)
    units = oc.supported(model, LaplacePosterior(curv, model, prior_precision=1.0)._specs)
    sizes = oc.output_sizes(model, units, x)
    assert sizes == oc.OutputSizes(outputs=4, unit_outputs=3 * 5 * 5 + 4)
    whole = LaplacePosterior(curv, model, prior_precision=1.0).output_covariance(x)
    monkeypatch.setattr(oc, "VECTOR_ELEMENTS", 4 * 79 * 2)  # two examples per backward
    assert sizes.examples_per_backward() == 2
    chunked = LaplacePosterior(curv, model, prior_precision=1.0).output_covariance(x)
    torch.testing.assert_close(chunked[0], whole[0])
    torch.testing.assert_close(chunked[1], whole[1], rtol=1e-12, atol=1e-14)
    monkeypatch.undo()
    assert oc.OutputSizes(10, 4_967_434).examples_per_backward() == 2  # resnet18 at 224×224
    assert oc.OutputSizes(1000, 10).examples_per_backward() == (1 << 16) // 1000


def test_backward_chunks_follow_the_input_shape_of_each_batch(monkeypatch):
    """A posterior that sees larger inputs later (longer sequences, larger images) sizes its backward chunks
    for them, not for the first batch's shape, and stays exact."""
    from uncert_cli.posterior import output_covariance as oc

    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(3 * 2 * 2, 4)
    ).to(DT)
    curv = random_kfac_curvature(model, ["0", "4"], "classification", n_data=30)
    post = LaplacePosterior(curv, model, prior_precision=0.8, n_data=20.0)
    measured: list[tuple[int, ...]] = []
    real_sizes = oc.output_sizes

    def spy(model, units, x):
        measured.append(tuple(x.shape[1:]))
        return real_sizes(model, units, x)

    monkeypatch.setattr(oc, "output_sizes", spy)
    small, large = torch.randn(3, 2, 4, 4, dtype=DT), torch.randn(3, 2, 8, 8, dtype=DT)
    post.output_covariance(small)
    _, cov = post.output_covariance(large)
    post.output_covariance(small)
    assert measured == [(2, 4, 4), (2, 8, 8)]  # each shape measured once
    expected = _explicit_cov(model, large, curv, 20.0, {"0": 0.8, "4": 0.8}, "eigen")
    torch.testing.assert_close(cov, expected, rtol=1e-10, atol=1e-12)


def test_sequence_first_layers_take_the_factored_path_when_t_differs_from_b():
    torch.manual_seed(8)
    model = _SequenceFirst().to(DT)
    x = torch.randn(4, 6, 3, dtype=DT)  # B = 4, T = 6: the Linear sees (6, 4, 3)
    curv = random_kfac_curvature(model, ["inner", "head"], "classification", n_data=25)
    _check(model, x, curv, {"inner": 0.9, "head": 1.6}, "factor")


# ---------------------------------------------------------------- one Jacobian pass for a hyperparameter grid


def _grid_variants(post):
    return [post.with_hyperparameters(n_data=n, prior_precision=tau, prior_mode=mode)
            for n in (5.0, 20.0, 200.0) for tau in (0.1, 3.0) for mode in ("eigen", "factor")]


@pytest.mark.parametrize("build", [kfac_curvature, diag_curvature])
def test_output_covariances_of_a_grid_match_one_at_a_time(build, model, data):
    """Every grid point's J Σ Jᵀ from the shared pass equals its own output_covariance and the explicit one."""
    curv = build(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=1.0, n_data=20.0)
    variants = _grid_variants(post)
    f, covs = post.output_covariances(data[:9], variants)
    assert len(covs) == len(variants)
    for variant, cov in zip(variants, covs):
        alone = variant.output_covariance(data[:9])
        torch.testing.assert_close(f, alone[0])
        torch.testing.assert_close(cov, alone[1], rtol=1e-12, atol=1e-14)
        explicit = _explicit_cov(model, data[:9], curv, variant.n_data, variant.prior_precision, variant.prior_mode)
        torch.testing.assert_close(cov, explicit, rtol=1e-10, atol=1e-12)


def test_conv_grid_matches_one_at_a_time():
    """Multi-position units form each chunk's rotated Jacobian once and weight it per grid point."""
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 5 * 5, 4)).to(DT)
    x = torch.randn(6, 2, 5, 5, dtype=DT)
    curv = random_kfac_curvature(model, ["0", "3"], "classification", n_data=30)
    post = LaplacePosterior(curv, model, prior_precision=1.0, n_data=30.0)
    variants = _grid_variants(post)
    _, covs = post.output_covariances(x, variants)
    for variant, cov in zip(variants, covs):
        torch.testing.assert_close(cov, variant.output_covariance(x)[1], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["probit", "glm"])
def test_grid_scores_equal_scores_one_point_at_a_time(kind, model, data):
    """The tuning grid's scores (shared pass) equal the per-point scores (common random numbers for glm)."""
    from uncert_cli.posterior.held_out import grid_scores, validation_scores

    curv = kfac_curvature(model, data, "classification")
    post = LaplacePosterior(curv, model, prior_precision=1.0, n_data=20.0)
    labels = torch.arange(data.shape[0]) % 3
    batches = [(data[:16], labels[:16]), (data[16:], labels[16:])]
    variants = _grid_variants(post)
    ticks = []
    together = grid_scores(variants, batches, kind=kind, samples=7, generator=torch.Generator().manual_seed(4),
                           on_examples=ticks.append)
    assert sum(ticks) == len(variants) * data.shape[0]
    for variant, score in zip(variants, together):
        alone = validation_scores(variant, batches, kind=kind, samples=7, generator=torch.Generator().manual_seed(4))
        assert score.nll == pytest.approx(alone.nll, rel=1e-12) and score.entropy == pytest.approx(alone.entropy, rel=1e-12)
    assert len({round(s.nll, 9) for s in together}) > 1  # the grid points really differ


# ---------------------------------------------------------------- eval-mode BatchNorm on the factored path


def _conv_bn_net(bn: nn.Module) -> nn.Sequential:
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), bn, nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 4)).to(DT)
    with torch.no_grad():  # trained-looking statistics and affine parameters, not the initial 0/1
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.3, 0.3)
    return model.eval()


def _check_against_marginals(model, x, y, method, covered):
    """J Σ Jᵀ of the factored path equals Σ_p J_p σ²_p J_pᵀ from torch.func Jacobians over every covered
    parameter (float64; exact for diagonal posteriors)."""
    from torch.func import functional_call, jacrev

    from uncert_cli.curvature.engine import compute_curvature

    curv = compute_curvature(model, [(x, y)], method=method)
    post = LaplacePosterior(curv, model, prior_precision=0.8, n_data=40.0)
    assert post.has_factored_outputs, "this model must not force the generic path"
    variances = post.marginal_variance()
    params = {n: p.detach() for n, p in model.named_parameters() if n in variances}
    assert set(covered) <= set(params)
    B, C = x.shape[0], post.output_covariance(x[:1])[0].shape[1]
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # {name: (B, C, *shape)}
    explicit = sum(
        torch.einsum("bcp,p,bdp->bcd", jac[n].reshape(B, C, -1), variances[n].reshape(-1), jac[n].reshape(B, C, -1))
        for n in params
    )
    f, cov = post.output_covariance(x)
    torch.testing.assert_close(cov, explicit, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bn", [nn.BatchNorm2d(3), nn.BatchNorm2d(3, eps=0.1)])
def test_batch_norm_takes_the_factored_path_exactly(bn):
    """A diagonal fit of a Conv-BN-Linear net: the BatchNorm's rows from its running statistics are exact."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(6, 2, 4, 4, generator=g, dtype=DT)
    _check_against_marginals(_conv_bn_net(bn), x, torch.randint(0, 4, (6,), generator=g), "diag", ["1.weight", "1.bias"])


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("conv", [
    lambda bias: nn.Conv2d(4, 4, 3, padding=1, groups=4, bias=bias),  # depthwise
    lambda bias: nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2, bias=bias),  # grouped, strided
])
def test_grouped_conv_takes_the_factored_path_exactly(conv, bias):
    """ShuffleNet/MobileNet-style depthwise and grouped convs, with a BatchNorm after them, in a diagonal fit:
    the grouped conv's rows from its per-group patches are exact."""
    torch.manual_seed(7)
    layer = conv(bias)
    model = nn.Sequential(nn.Conv2d(2, 4, 1), layer, nn.BatchNorm2d(layer.out_channels), nn.Tanh(), nn.Flatten(),
                          nn.LazyLinear(3)).to(DT)
    x = torch.randn(5, 2, 4, 4, dtype=DT)
    model(x)  # materialise the lazy Linear
    model.eval()
    covered = ["1.weight"] + (["1.bias"] if bias else [])
    _check_against_marginals(model, x, torch.tensor([0, 1, 2, 0, 1]), "diag", covered)


def test_batch_norm_without_running_statistics_keeps_the_generic_path():
    """Batch statistics couple the examples of a batch: no per-example rows, so the generic path answers."""
    from uncert_cli.curvature.engine import compute_curvature

    model = _conv_bn_net(nn.BatchNorm2d(3))
    x = torch.randn(5, 2, 4, 4, dtype=DT)
    curv = compute_curvature(model, [(x, torch.zeros(5, dtype=torch.long))], method="diag")
    model[1].track_running_stats = False
    model[1].running_mean = model[1].running_var = None
    post = LaplacePosterior(curv, model, prior_precision=1.0, n_data=10.0)
    assert not post.has_factored_outputs


def test_score_grid_progress_counts_every_example_once_per_point(model, data):
    """The grid search's bar is declared with the total it then reaches, whatever the grid."""
    import contextlib

    from uncert_cli.posterior.held_out import score_grid

    post = LaplacePosterior(kfac_curvature(model, data, "classification"), model, prior_precision=1.0, n_data=20.0)
    labels = torch.arange(data.shape[0]) % 3
    batches = [(data[:16], labels[:16]), (data[16:], labels[16:])]
    bars = []

    @contextlib.contextmanager
    def progress(total, description):
        bars.append([total, 0])
        yield lambda k: bars[-1].__setitem__(1, bars[-1][1] + k)

    scored = score_grid(post, batches, kind="probit", n_grid=[10.0, 20.0], tau_grid=[0.1, 1.0, 10.0], samples=1,
                        progress=progress)
    assert [(n, tau) for n, tau, _ in scored] == [(10.0, 0.1), (10.0, 1.0), (10.0, 10.0), (20.0, 0.1), (20.0, 1.0), (20.0, 10.0)]
    assert bars == [[6 * data.shape[0], 6 * data.shape[0]]]
