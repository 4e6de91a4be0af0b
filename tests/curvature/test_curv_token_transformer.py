"""A tiny BERT classifier fed packed token data as keywords: its curvature against the explicit float64 GGN.

``input_ids``, ``attention_mask`` (with padding) and ``token_type_ids`` reach the network as keyword
arguments through the root pre-hook (:mod:`uncert_cli.checkpoint.keyword_inputs`), exactly as the CLI
feeds them. Every parameter is covered, position embeddings included (looked up once for the whole
batch and broadcast; the engine expands them to per-example outputs): ``diag`` equals the GGN's
diagonal, and each KFAC block equals its definition with token positions summed,
``A = 1/N Σ_n 1/T Σ_p ã ãᵀ`` and ``G = 1/N Σ_n Σ_p J_pᵀ H_n J_p`` (``J_p``: the logits' Jacobian with
respect to the layer's output at position ``p``).
"""

from __future__ import annotations

import pytest
import torch
from torch.func import jacrev

from tests.reference.ggn import explicit_ggn, loss_hessians
from tests.reference.indices import param_diagonal
from uncert_cli.checkpoint.keyword_inputs import feed_keyword_inputs
from uncert_cli.checkpoint.outputs import parse_output_choice, select_output
from uncert_cli.curvature import DiagonalBlock, KroneckerBlock, compute_curvature

transformers = pytest.importorskip("transformers", reason="transformers is an optional extra (pip install -e '.[hf]')")

NAMES = ("input_ids", "attention_mask", "token_type_ids")
B, T, C = 5, 6, 3


@pytest.fixture(scope="module")
def bert_and_tokens():
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=12, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=10, max_position_embeddings=T, num_labels=C,
                                     initializer_range=0.5, attn_implementation="eager")
    model = transformers.BertForSequenceClassification(config).double().eval()
    select_output(model, parse_output_choice("logits"))
    feed_keyword_inputs(model, NAMES, "tokens")
    ids = torch.randint(1, 12, (B, T))
    lengths = torch.tensor([6, 4, 3, 5, 2])
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    types = (torch.arange(T)[None] >= 3).long().expand(B, T)
    x = torch.stack([ids * mask, mask, types], dim=1)  # (B, 3, T), as the token file loader packs it
    y = torch.randint(0, C, (B,))
    return model, x, y


def test_the_packed_keywords_are_what_the_network_receives(bert_and_tokens):
    model, x, _ = bert_and_tokens
    with torch.no_grad():
        direct = model.bert(input_ids=x[:, 0], attention_mask=x[:, 1], token_type_ids=x[:, 2]).pooler_output
        packed = model(x)
        unmasked = model(x[:, 0])  # a plain (B, T) tensor is the first argument, no mask
    torch.testing.assert_close(packed, model.classifier(direct))
    assert not torch.allclose(packed, unmasked)  # the mask and token types do change the answer


def test_diag_of_every_parameter_equals_the_explicit_ggn(bert_and_tokens):
    model, x, y = bert_and_tokens
    ggn = explicit_ggn(model, x, "classification")
    curv = compute_curvature(model, [(x[:3], y[:3]), (x[3:], y[3:])], method="diag")
    covered = {n for b in curv.blocks for n in b.param_names}
    assert covered == {n for n, _ in model.named_parameters()}
    assert "bert.embeddings.position_embeddings.weight" in covered
    for block in curv.blocks:
        assert isinstance(block, DiagonalBlock)
        for name, diag in zip(block.param_names, block.diagonal):
            torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-8, atol=1e-12, msg=name)


def _kfac_definition(model, x, module_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``(A, G)`` of one Linear module by its definition, from the module's inputs and output Jacobians."""
    module = model.get_submodule(module_name)
    seen: dict[str, torch.Tensor] = {}
    replacement: dict[str, torch.Tensor] = {}

    def hook(mod, args, output):
        seen["input"] = args[0].detach()
        return replacement.get("output", output)

    handle = module.register_forward_hook(hook)
    try:
        A = G = None
        for n in range(x.shape[0]):
            xn = x[n : n + 1]
            with torch.no_grad():
                logits = model(xn)
            a = seen["input"].reshape(-1, seen["input"].shape[-1])  # (P, I)
            a = torch.cat([a, torch.ones(a.shape[0], 1, dtype=a.dtype)], 1)
            out_shape = module(seen["input"]).shape

            def logits_of(z, xn=xn):
                replacement["output"] = z
                try:
                    return model(xn)[0]
                finally:
                    replacement.clear()

            J = jacrev(logits_of)(torch.zeros(out_shape, dtype=torch.float64) + module(seen["input"]).detach())
            J = J.reshape(C, -1, out_shape[-1])  # (C, P, O)
            H = loss_hessians(logits, "classification")[0]
            Gn = torch.einsum("cpo,cd,dpq->oq", J, H, J)
            An = a.T @ a / a.shape[0]
            A = An if A is None else A + An
            G = Gn if G is None else G + Gn
        return A / x.shape[0], G / x.shape[0]
    finally:
        handle.remove()


def test_kfac_blocks_equal_their_definition_with_positions_summed(bert_and_tokens):
    model, x, y = bert_and_tokens
    curv = compute_curvature(model, [(x[:2], y[:2]), (x[2:], y[2:])], method="kfac")
    kron = {b.module: b for b in curv.blocks if isinstance(b, KroneckerBlock)}
    expected = {"bert.encoder.layer.0.attention.self.query", "bert.encoder.layer.0.attention.self.value",
                "bert.encoder.layer.0.intermediate.dense", "bert.pooler.dense", "classifier"}
    assert expected <= set(kron)
    for name in sorted(expected):
        A, G = _kfac_definition(model, x, name)
        torch.testing.assert_close(kron[name].input_factor, A, rtol=1e-8, atol=1e-12, msg=name)
        torch.testing.assert_close(kron[name].output_factor, G, rtol=1e-8, atol=1e-12, msg=name)
    diagonal = {n for b in curv.blocks if isinstance(b, DiagonalBlock) for n in b.param_names}
    assert "bert.embeddings.position_embeddings.weight" in diagonal


def test_a_batch_as_long_as_the_sequences_is_still_per_example(bert_and_tokens):
    # B == T: the shapes alone cannot tell the batch axis of the (1, T, H) position lookup from its positions
    model, x, _ = bert_and_tokens
    x6 = torch.cat([x, x[:1].flip(2)])  # 6 examples of 6 tokens
    y6 = torch.arange(T) % C
    ggn = explicit_ggn(model, x6, "classification")
    curv = compute_curvature(model, [(x6, y6)], method="diag")
    name = "bert.embeddings.position_embeddings.weight"
    block = next(b for b in curv.blocks if name in b.param_names)
    diag = block.diagonal[block.param_names.index(name)]
    torch.testing.assert_close(diag, param_diagonal(model, ggn, name), rtol=1e-8, atol=1e-12)
