"""The input factor of a conv on a small map from the Gram matrix of its whole input maps.

Every patch is a selection of input pixels: with ``x_b`` the whole input of example ``b`` (``C·S``
entries for ``S`` input pixels, pixel-major: ``x.movedim(1, -1).reshape(B, -1)``), the patch at
output position ``p`` is ``a_{b,p} = E_p x_b``, where ``E_p`` picks for each kernel tap the pixel it
reads (nothing for a tap that reads padding). So the patch Gram sum KFAC's input factor needs is

    Σ_b Σ_p a_{b,p} a_{b,p}ᵀ = Σ_p E_p M E_pᵀ,    M = Σ_b x_b x_bᵀ   (C·S × C·S),

and per batch only ``M`` is updated: ``(C·S)²/2`` multiply-adds per example and a copy of the input
(not of the ``T`` times larger patches), against ``P·(C·T)²/2`` for the Gram product of the patches
(``P`` output positions, ``T`` taps).
On small maps that is far less: 20× on resnet18's layer3 (256 channels, 2×2 maps, 3×3 kernels),
5× on layer2 (128 channels, 4×4). The selection ``Σ_p E_p M E_pᵀ`` is applied once per fit, when
the factor is read, as one matrix product over pixel pairs (:func:`fold_pixel_gram`); the price is
keeping ``M`` until then (on resnet18 at 32×32 inputs 83 MiB in all, freed before any
eigendecomposition).

Between taps ``u`` and ``v`` the ``C × C`` block is ``Σ_{q,r} W[u, v, q, r]·M[q, :, r, :]`` with
``W[u, v, q, r]`` the number of output positions whose tap ``u`` reads pixel ``q`` and tap ``v``
pixel ``r`` (0 or 1: a tap reads one pixel per position).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from uncert_cli.curvature.conv_input import Taps, live_taps
from uncert_cli.curvature.subset import conv_padding


def pixel_selection(module: nn.Conv1d | nn.Conv2d, spatial: tuple[int, ...]) -> tuple[Taps, Tensor]:
    """The taps some position sees inside an input of size ``spatial`` and the selections ``E``:
    ``(P, T', S)`` float64, ``E[p, t, q] = 1`` where output position ``p``'s tap ``t`` (the ``t``-th
    of those taps, row-major) reads input pixel ``q`` (row-major), else 0.
    """
    padding = conv_padding(module)
    assert padding is not None  # supported_structure() guarantees it
    taps = live_taps(module, spatial) or tuple(tuple(range(k)) for k in module.kernel_size)
    selection = torch.ones(1, 1, 1, dtype=torch.float64)
    for n, k, kept, s, dil, pad in zip(spatial, module.kernel_size, taps, module.stride, module.dilation, padding):
        positions = (n + 2 * pad - dil * (k - 1) - 1) // s + 1
        per_dim = torch.zeros(positions, len(kept), n, dtype=torch.float64)
        for p in range(positions):
            for j, t in enumerate(kept):
                i = p * s + t * dil - pad
                if 0 <= i < n:
                    per_dim[p, j, i] = 1.0
        # outer product over the dimensions: positions, taps and pixels each row-major
        P, T, S = selection.shape
        selection = torch.einsum("atq,bur->abtuqr", selection, per_dim).reshape(P * positions, T * len(kept), S * n)
    return taps, selection


def fold_pixel_gram(M: Tensor, sums: Tensor, selection: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``Σ_p E_p M E_pᵀ`` and ``Σ_p E_p s`` for the selections ``E`` of :func:`pixel_selection`.

    Only the lower triangle of ``M`` is read (as :func:`~.gram.gram_lower_` leaves it), so it needs
    no mirroring: with ``M_qr`` the ``C × C`` tile of pixels ``q`` and ``r``, the tile of taps ``u``, ``v``
    is ``L_uv + L_vuᵀ``, ``L_uv = Σ_{q>r} W[u,v,q,r]·M_qr + ½ Σ_q W[u,v,q,q]·M_qq`` (``W`` is symmetric
    under swapping both pairs, and the diagonal tiles ``M_qq`` are made symmetric first).

    Args:
        M: ``(S·C, S·C)``, pixel-major (row ``q·C + c``); its lower triangle is read, and the
            upper triangles of its diagonal tiles are overwritten.
        sums: ``(S·C,)``, the summed inputs ``s = Σ_b x_b``, pixel-major.
        selection: ``(P, T', S)``.

    Returns:
        ``L`` as its nonzero tap-pair tiles: tap indices ``u`` and ``v`` (``(n,)`` each, into the ``T'``
        taps) and tiles ``(n, C, C)`` (``[i, c, c']``: channel ``c`` at tap ``u_i``, ``c'`` at tap
        ``v_i``); every other pair of taps never reads the input at one position together. Then the
        patch sum ``(C, T')``.
    """
    _, T, S = selection.shape
    C = M.shape[0] // S
    E = selection.to(M.dtype).to(M.device)
    tiles = M.view(S, C, S, C).transpose(1, 2)  # (S, S, C, C), a view: [q, r] is M_qr
    for q in range(S):
        diagonal = tiles[q, q]
        diagonal.copy_(diagonal.tril() + diagonal.tril(-1).t())
    pairs = torch.einsum("puq,pvr->uvqr", E, E)  # W[u, v, q, r]
    pairs = pairs.tril().reshape(T * T, S * S) - 0.5 * torch.diag_embed(pairs.diagonal(0, 2, 3)).reshape(T * T, S * S)
    taps = pairs.any(1).nonzero().flatten()  # tap pairs some position sees together
    pixels = pairs.any(0).nonzero().flatten()  # pixel pairs q ≥ r some position reads together
    lower = tiles[pixels // S, pixels % S].reshape(len(pixels), C * C)  # one gather (runs of C)
    gram = (pairs[taps][:, pixels] @ lower).view(-1, C, C)
    return taps // T, taps % T, gram, sums.view(S, C).t() @ E.sum(0).t()
