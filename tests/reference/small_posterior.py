"""A tiny network with hand-built curvature (one Kronecker block, one diagonal block) and dense references.

The references never use the factor eigendecompositions: they invert the dense precision
``N·kron(G, A) + τI`` (Kronecker) or ``N·d + τ`` (diagonal) in float64 (``tests.reference.dense``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tests.reference.dense import block_matrix, dense_precision
from uncert_cli.checkpoint import ModelMeta, weights_fingerprint
from uncert_cli.curvature.blocks import Curvature, DiagonalBlock, KroneckerBlock
from uncert_cli.models import MLP
from uncert_cli.store import PriorSettings, write_factor_file

KWARGS = {"in_features": 4, "hidden": [3], "out_features": 2}
META = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=KWARGS, input_shape=(1, 2, 2),
                 task="classification", num_outputs=2, dataset="digits")
N_DATA = 50


def _psd(n: int, generator: torch.Generator, rank: int | None = None) -> torch.Tensor:
    x = torch.randn(n, rank or n, generator=generator, dtype=torch.float64)
    return x @ x.T / (rank or n)


@dataclass
class Small:
    model: MLP
    curvature: Curvature
    G: np.ndarray  # (3, 3) fc1 output factor
    A: np.ndarray  # (5, 5) fc1 input factor (bias last)
    d2: dict[str, np.ndarray]  # fc2 diagonal per parameter


def small(seed: int = 0) -> Small:
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = MLP(**KWARGS).double()
    G, A = _psd(3, g), _psd(5, g, rank=3)  # A rank deficient: some directions only the prior sees
    d2 = (torch.rand(2, 3, generator=g, dtype=torch.float64), torch.rand(2, generator=g, dtype=torch.float64))
    d2 = (d2[0] * (d2[0] > 0.3), d2[1])  # exact zeros: weights the data did not touch at all
    blocks = [
        KroneckerBlock("fc1", ("fc1.weight", "fc1.bias"), ((3, 4), (3,)), A, G),
        DiagonalBlock("fc2", ("fc2.weight", "fc2.bias"), ((2, 3), (2,)), d2),
    ]
    curv = Curvature(blocks=blocks, n_data=N_DATA, task="classification", method="kfac", fisher_type="exact")
    return Small(model, curv, G.numpy(), A.numpy(), {"fc2.weight": d2[0].numpy(), "fc2.bias": d2[1].numpy()})


def _dense_precisions(s: Small, tau: float, n: float) -> list[np.ndarray]:
    """The two blocks' dense precisions ``N·C + τI``: fc1 ``(15, 15)`` in ``W_aug`` order, fc2 ``(8, 8)``
    (weight, then bias)."""
    return [dense_precision(b, n, tau).numpy() for b in s.curvature.blocks]


def dense_variances(s: Small, tau: float, n: float = N_DATA) -> dict[str, np.ndarray]:
    """Marginal posterior variances from the dense inverse, per parameter name."""
    fc1, fc2 = (np.diag(np.linalg.inv(p)) for p in _dense_precisions(s, tau, n))
    fc1 = fc1.reshape(3, 5)  # row-major W_aug = [W | b]
    return {"fc1.weight": fc1[:, :4], "fc1.bias": fc1[:, 4], "fc2.weight": fc2[:6].reshape(2, 3), "fc2.bias": fc2[6:]}


def dense_gamma(s: Small, tau: float, n: float = N_DATA) -> dict[str, float]:
    """Effective parameters ``Σ λ/(λ + τ)`` per layer over the eigenvalues λ of ``N·C``."""
    out = {}
    for block in s.curvature.blocks:
        lam = np.clip(np.linalg.eigvalsh(n * block_matrix(block).numpy()), 0, None)
        out[block.module] = float(np.sum(lam / (lam + tau)))
    return out


def dense_entropy(s: Small, tau: float, n: float = N_DATA) -> dict[str, float]:
    """Gaussian entropy ``½(P(1 + log 2π) − log det precision)`` per layer."""
    out = {}
    for block, prec in zip(s.curvature.blocks, _dense_precisions(s, tau, n)):
        out[block.module] = 0.5 * (prec.shape[0] * (1 + math.log(2 * math.pi)) - np.linalg.slogdet(prec)[1])
    return out


def dense_hessian_diag(s: Small, n: float = N_DATA) -> dict[str, np.ndarray]:
    """``N · diag(curvature)`` per weight, from the dense block matrices."""
    fc1, fc2 = (n * np.diag(block_matrix(b).numpy()) for b in s.curvature.blocks)
    return {"fc1.weight": fc1.reshape(3, 5)[:, :4], "fc2.weight": fc2[:6].reshape(2, 3)}


def write_small_factor_file(path: Path, s: Small, tau: float = 1.0) -> Path:
    model32 = MLP(**KWARGS)
    model32.load_state_dict({k: v.float() for k, v in s.model.state_dict().items()})
    curv = Curvature(
        blocks=[
            KroneckerBlock(b.module, b.param_names, b.param_shapes, b.input_factor.float(), b.output_factor.float())
            if isinstance(b, KroneckerBlock)
            else DiagonalBlock(b.module, b.param_names, b.param_shapes, tuple(d.float() for d in b.diagonal))
            for b in s.curvature.blocks
        ],
        n_data=N_DATA, task="classification", method="kfac", fisher_type="exact",
    )
    return write_factor_file(
        path, curv, state_dict=model32.state_dict(), model_meta=META, fingerprint=weights_fingerprint(model32),
        checkpoint_path=str(path.with_suffix(".safetensors")), fit={"dataset": "digits", "split": "train"},
        prior=PriorSettings(prior_precision=tau),
    )
