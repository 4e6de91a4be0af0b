"""Predictive distributions of a Laplace posterior.

The network's output is taken as logits (classification) or as the Gaussian mean (regression), and is
flattened to ``(B, C)``. Kinds:

* ``map`` -- the network at the MAP weights.
* ``mc`` -- average over ``S`` weight samples of the network (Ritter et al. 2018, eq. 4), evaluated with
  ``torch.func.functional_call`` (vmapped over chunks of samples when the model allows it).
* ``glm`` -- the linearised network ``f(x; θ*) + J(x)(θ − θ*)``, whose outputs are Gaussian with
  covariance ``J Σ Jᵀ``. Regression is exact: mean ``f(x; θ*)``, variance ``diag(J Σ Jᵀ) + σ²``.
  Classification averages the softmax of ``S`` sampled logits: drawn from ``N(f, J Σ Jᵀ)`` when every
  block is a Linear/Conv one (:mod:`~uncert_cli.posterior.output_covariance`), else as ``J δθ`` for
  weight samples ``δθ`` (forward-mode ``torch.func.jvp``, vmapped over the samples, no Jacobian formed).
* ``probit`` -- classification only, closed form ``softmax(f(x; θ*) · κ)`` with
  ``κ = (1 + π/8 · diag(J Σ Jᵀ))^{-1/2}``.
* ``dropout`` -- MC dropout: the Dropout modules in train mode, everything else in eval mode.

Sampled kinds draw their ``S`` samples once per posterior and ``(S, seed)`` and reuse them for every
call and batch (``seed = generator.initial_seed()``, 0 without a generator), so predictions are
deterministic and consistent across batches. MC dropout reseeds torch's RNG the same way (inside
``torch.random.fork_rng``, leaving the global state untouched).

Regression returns ``(mean, variance)``, both ``(B, D)``; the variance includes the observation noise
``σ²`` (``noise_std**2``) for every kind (``map``: just ``σ²``).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp, vmap

from uncert_cli.curvature.plain_kernels import plain_kernels

from uncert_cli.errors import UserError
from uncert_cli.posterior.sampling import DEFAULT_SEED

if TYPE_CHECKING:
    from uncert_cli.posterior.laplace import LaplacePosterior

Predictive = Literal["map", "mc", "glm", "probit", "dropout"]
PREDICTIVES: tuple[str, ...] = ("map", "mc", "glm", "probit", "dropout")
DEFAULT_SAMPLE_CHUNK = 16

_DROPOUT_TYPES = (nn.modules.dropout._DropoutNd,)


@contextlib.contextmanager
def eval_mode(model: nn.Module, dropout_train: bool = False) -> Iterator[None]:
    """Eval mode for the whole model (Dropout modules optionally in train mode); restores the flags."""
    saved = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        if dropout_train:
            for m in model.modules():
                if isinstance(m, _DROPOUT_TYPES):
                    m.train()
        yield
    finally:
        for m, flag in saved:
            m.training = flag


def _flat(out: Tensor) -> Tensor:
    return out.reshape(out.shape[0], -1)


def _over_sample_chunks(
    fn_batched: Callable[[dict[str, Tensor]], Tensor],
    fn_single: Callable[[dict[str, Tensor]], Tensor],
    tangents: dict[str, Tensor],
    n_samples: int,
    chunk: int,
    state: dict[str, bool],
) -> Tensor:
    """Apply ``fn`` to every sample: vmapped over chunks of samples, or one by one if vmap fails."""
    outs = []
    for start in range(0, n_samples, chunk):
        part = {k: v[start : start + chunk] for k, v in tangents.items()}
        if state.get("vmap", True):
            try:
                outs.append(fn_batched(part))
                continue
            except (RuntimeError, NotImplementedError, ValueError):
                state["vmap"] = False  # model not vmappable (e.g. data-dependent control flow)
        n = next(iter(part.values())).shape[0]
        outs.append(torch.stack([fn_single({k: v[i] for k, v in part.items()}) for i in range(n)]))
    return torch.cat(outs)


def sampled_outputs(post: LaplacePosterior, x: Tensor, samples: int, generator) -> Tensor:
    """Network outputs at ``S`` posterior samples, ``(S, B, C)``."""
    model, theta = post.model, post.map_parameters
    dev = post._deviations(samples, generator)

    def single(d: dict[str, Tensor]) -> Tensor:
        return _flat(functional_call(model, {k: theta[k] + d[k] for k in d}, (x,)))

    with torch.no_grad():
        return _over_sample_chunks(vmap(single), single, dev, samples, post.sample_chunk, post._vmap_state)


def linearised_outputs(post: LaplacePosterior, x: Tensor, samples: int, generator) -> tuple[Tensor, Tensor]:
    """``f(x; θ*)`` ``(B, C)`` and the sampled ``J(x) δθ`` ``(S, B, C)`` via forward-mode AD."""
    model, theta = post.model, post.map_parameters
    dev = post._deviations(samples, generator)

    def f(p: dict[str, Tensor]) -> Tensor:
        return _flat(functional_call(model, p, (x,)))

    def single(t: dict[str, Tensor]) -> Tensor:
        return jvp(f, (theta,), (t,))[1]

    with torch.no_grad():  # forward-mode AD works under no_grad; this avoids graphs through other parameters
        f0 = f(theta)
        jd = _over_sample_chunks(vmap(single), single, dev, samples, post.sample_chunk, post._vmap_state)
    return f0, jd


def _check_samples(samples: int) -> None:
    if not isinstance(samples, int) or samples < 1:
        raise UserError(f"samples must be a positive integer, got {samples!r}; pass e.g. samples=100")


def predict(post: LaplacePosterior, x: Tensor, kind: str, samples: int, generator) -> Tensor | tuple[Tensor, Tensor]:
    if kind not in PREDICTIVES:
        raise UserError(f"unknown predictive '{kind}'; use one of {', '.join(PREDICTIVES)}")
    regression = post.task == "regression"
    noise_var = post.noise_std**2
    model = post.model
    # Sampled and linearised predictives differentiate or vmap through the model: fused recurrent
    # and attention kernels support neither, so those layers run on plain kernels (same outputs).
    kernels = plain_kernels(model) if kind != "map" else contextlib.nullcontext()
    with eval_mode(model), kernels:
        if kind == "map":
            with torch.no_grad():
                f = _flat(model(x))
            return (f, torch.full_like(f, noise_var)) if regression else torch.softmax(f, -1)
        if kind in ("probit", "glm"):
            if kind == "probit" and regression:
                raise UserError("the probit predictive is for classification; use 'glm' for regression")
            fast = post.output_covariance(x)
            if fast is not None:
                return _from_covariance(post, kind, *fast, samples, generator)
            if kind == "probit" or regression:
                with torch.no_grad():
                    f = _flat(model(x))
                return _from_variance(post, kind, f, post.functional_variance(x))
        if kind == "dropout":
            outs = _dropout_outputs(model, x, samples, generator)
        else:
            _check_samples(samples)
            if kind == "mc":
                outs = sampled_outputs(post, x, samples, generator)
            else:  # glm classification
                f0, jd = linearised_outputs(post, x, samples, generator)
                outs = f0.unsqueeze(0) + jd
    if regression:
        return outs.mean(0), outs.var(0, unbiased=False) + noise_var
    return torch.softmax(outs, -1).mean(0)


def _from_variance(post: LaplacePosterior, kind: str, f: Tensor, var: Tensor) -> Tensor | tuple[Tensor, Tensor]:
    """The probit (classification) or Gaussian (regression) predictive from outputs ``f`` and their
    linearised variances ``var``, both ``(B, C)``."""
    if kind == "probit":
        return torch.softmax(f / torch.sqrt(1.0 + math.pi / 8.0 * var), -1)
    return f, var + post.noise_std**2


def _from_covariance(
    post: LaplacePosterior, kind: str, f: Tensor, cov: Tensor, samples: int, generator
) -> Tensor | tuple[Tensor, Tensor]:
    """``probit`` or ``glm`` from MAP outputs ``f`` ``(B, C)`` and ``J Σ Jᵀ`` ``(B, C, C)``."""
    if kind == "probit" or post.task == "regression":
        return _from_variance(post, kind, f, torch.diagonal(cov, dim1=-2, dim2=-1))
    _check_samples(samples)
    return torch.softmax(_sampled_logits(f, cov, samples, generator), -1).mean(0)


def predict_many(
    posts: Sequence[LaplacePosterior],
    x: Tensor,
    kind: str,
    samples: int,
    generator,
    on_each: Callable[[], None] = lambda: None,
) -> list[Tensor | tuple[Tensor, Tensor]]:
    """:func:`predict` of each of ``posts`` (one posterior under several hyperparameter settings, from
    ``with_hyperparameters``) on the same ``x``; ``on_each()`` after each.

    ``probit`` and ``glm`` share one forward, one backward and one rotation into the blocks' eigenbases for
    all of them where the factored output covariance applies (a tuning grid's cost is then mostly the
    prediction, not the Jacobian); everything else predicts one posterior at a time.
    """
    if kind in ("probit", "glm") and posts and posts[0].has_factored_outputs:
        first = posts[0]
        with eval_mode(first.model), plain_kernels(first.model):
            fast = first.output_covariances(x, posts)
        if fast is not None:
            f, covs = fast
            out = []
            for post, cov in zip(posts, covs):
                out.append(_from_covariance(post, kind, f, cov, samples, generator))
                on_each()
            return out
    out = []
    for post in posts:
        out.append(predict(post, x, kind, samples, generator))
        on_each()
    return out


def covariance_root(cov: Tensor) -> Tensor:
    """A square root ``L`` with ``L Lᵀ = cov`` for a batch ``(B, C, C)``, in float64.

    Cholesky (unique, so predictions change smoothly with the hyperparameters), with a jitter of
    1e-12 of the largest variance; matrices that still fail (numerically singular) fall back to a
    clipped eigendecomposition.
    """
    c = cov.double()
    scale = torch.diagonal(c, dim1=-2, dim2=-1).amax(-1).clamp_min(1e-300)
    eye = torch.eye(c.shape[-1], dtype=c.dtype, device=c.device)
    L, info = torch.linalg.cholesky_ex(c + 1e-12 * scale[:, None, None] * eye)
    bad = info > 0
    if bad.any():
        evals, evecs = torch.linalg.eigh(c[bad])
        L[bad] = evecs * evals.clamp_min(0.0).sqrt().unsqueeze(-2)
    return L


def _sampled_logits(f: Tensor, cov: Tensor, samples: int, generator) -> Tensor:
    """``S`` draws of the linearised logits ``N(f, cov)``, ``(S, B, C)``.

    One set of standard normals ``(S, C)`` per ``(S, seed)`` serves every example and batch (as the
    weight-space samples do), so predictions are deterministic and independent of batching.
    """
    seed = generator.initial_seed() if generator is not None else DEFAULT_SEED
    z = torch.randn(samples, f.shape[1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    noise = torch.einsum("bck,sk->sbc", covariance_root(cov), z.to(cov.device))
    return f.unsqueeze(0) + noise.to(f.dtype)


def _dropout_outputs(model: nn.Module, x: Tensor, samples: int, generator) -> Tensor:
    _check_samples(samples)
    if not any(isinstance(m, _DROPOUT_TYPES) for m in model.modules()):
        raise UserError(
            "the model has no Dropout modules, so MC dropout is not available; use kind 'glm', 'mc' or 'probit'"
        )
    seed = generator.initial_seed() if generator is not None else DEFAULT_SEED
    devices = [x.device.index] if x.device.type == "cuda" else []
    with eval_mode(model, dropout_train=True), torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        return torch.stack([_flat(model(x)) for _ in range(samples)])
