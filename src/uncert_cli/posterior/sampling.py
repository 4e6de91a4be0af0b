"""Drawing weight samples from the block-diagonal Gaussian posterior.

All samples of a block are drawn at once: standard normals ``Z`` of shape ``(S, O, I')`` are scaled by
``M^{-1/2}`` and rotated with one batched matmul pair (``Ug (Z ⊙ M^{-1/2}) Uaᵀ``, Ritter et al. 2018,
App. B in eigen form); diagonal blocks are ``z / sqrt(precision)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from uncert_cli.posterior.structures import Structure

DEFAULT_SEED = 0


def draw_deviations(
    specs: Sequence[Structure], prec_eigs: Sequence[Tensor], n_samples: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """Posterior deviations ``θ − θ*`` for every covered parameter, each of shape ``(S, *param_shape)``.

    Normals are drawn on the generator's device (CPU when ``generator`` is None, from torch's global RNG)
    and moved to the parameters' device, so a CPU generator gives the same samples everywhere.
    """
    out: dict[str, Tensor] = {}
    for spec, eigs in zip(specs, prec_eigs):
        dev = generator.device if generator is not None else torch.device("cpu")
        z = torch.randn((n_samples, *spec.noise_shape()), generator=generator, dtype=eigs.dtype, device=dev)
        out.update(spec.sample_deviation(eigs, z.to(eigs.device)))
    return out


class SampleCache:
    """Keeps the deviations of the last ``(n_samples, seed)`` so predictions reuse one set of samples.

    Holds one entry (``S x P`` numbers) at a time; a posterior with other hyperparameters has its own.
    """

    def __init__(self) -> None:
        self._key: tuple[int, int] | None = None
        self._value: dict[str, Tensor] | None = None

    def get(
        self,
        specs: Sequence[Structure],
        prec_eigs: Sequence[Tensor],
        n_samples: int,
        generator: torch.Generator | None,
    ) -> dict[str, Tensor]:
        seed = generator.initial_seed() if generator is not None else DEFAULT_SEED
        key = (n_samples, seed)
        if self._key != key or self._value is None:
            gen = torch.Generator(device=generator.device if generator is not None else "cpu")
            gen.manual_seed(seed)
            self._value = draw_deviations(specs, prec_eigs, n_samples, gen)
            self._key = key
        return self._value
