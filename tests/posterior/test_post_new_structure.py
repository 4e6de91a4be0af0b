"""A structure defined entirely in this module (block, posterior class, codec) works everywhere.

Proof that the tables register themselves (issue 12, items 1 and 10): declaring the three classes is all
a structure needs: no line in ``STRUCTURES``, ``CODECS`` or any other module. The toy structure is an
isotropic curvature ``c·I`` per block (``c``: the mean of the exact GGN diagonal), whose posterior has the
closed form ``precision = n_eff·c + τ`` on every parameter, so the answers can be checked exactly.

The classes are defined inside a fixture and removed from the tables afterwards, so other tests that
walk the tables see only the package's own structures.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import h5py
import pytest
import torch
from torch import Tensor

from tests.reference.small_posterior import KWARGS, META
from uncert_cli.checkpoint import weights_fingerprint
from uncert_cli.curvature import compute_curvature
from uncert_cli.core.vocabulary import PredictiveKind
from uncert_cli.curvature.blocks import Curvature, CurvatureBlock
from uncert_cli.curvature.methods import METHODS, CurvatureMethod
from uncert_cli.models import MLP
from uncert_cli.posterior.predictives import PREDICTIVES, Predictive
from uncert_cli.posterior.structures import STRUCTURES
from uncert_cli.posterior.structures.base import FlatPacked, PriorMode, Scalar, Structure, cast, float64
from uncert_cli.storage.arrays import FLOAT_DTYPES, read_tensor, write_array
from uncert_cli.storage.codecs import CODECS, Codec, Header
from uncert_cli.storage.factor_file import PriorSettings, read_factor_file, write_factor_file
from uncert_cli.storage.opening import open_posterior

TAG = "toy-isotropic"
N_DATA, TAU = 40, 2.0


def _define_toy_structure() -> SimpleNamespace:
    """Declare the three classes of the toy structure (declaring them registers them)."""

    @dataclass
    class IsotropicBlock(CurvatureBlock):
        """Curvature ``scale · I`` over one module's parameters."""

        module: str
        param_names: tuple[str, ...]
        param_shapes: tuple[tuple[int, ...], ...]
        scale: Tensor  # () the mean curvature per parameter

        structure: ClassVar[str] = TAG

        @property
        def num_params(self) -> int:
            return sum(math.prod(s) for s in self.param_shapes)

        def value_tensors(self) -> list[Tensor]:
            return [self.scale]

    @dataclass(frozen=True)
    class IsotropicStructure(FlatPacked):
        """Precision ``(n_eff · scale + τ) I`` (P,)."""

        tag = TAG

        scale: Tensor

        @classmethod
        def from_block(cls, block: Any, shapes: tuple[torch.Size, ...], ref: Tensor) -> Structure:
            return cls(block.module, tuple(block.param_names), shapes, cast(block.scale, ref).clamp_min(0))

        @property
        def num_params(self) -> int:
            return sum(s.numel() for s in self.param_shapes)

        def precision(self, tau: Scalar, n_eff: Scalar, mode: PriorMode = PriorMode.eigen) -> Tensor:
            return (n_eff * self.scale + tau) * self.scale.new_ones(self.num_params)

        def marginal_variance(self, prec: Tensor) -> dict[str, Tensor]:
            return self.unpack(prec.reciprocal())

        def sample_deviation(self, prec: Tensor, z: Tensor) -> dict[str, Tensor]:
            return self.unpack(z * prec.rsqrt(), batch_dims=1)

        def quadratic_form(self, prec: Tensor, grads: dict[str, Tensor], batch_dims: int) -> Tensor:
            return (self.pack(grads, batch_dims).square() / prec).sum(-1)

        def curvature_diagonal(self) -> Tensor:
            return self.scale.expand(self.num_params)

        def to_float64(self) -> Structure:
            return replace(self, scale=float64(self.scale))

    class IsotropicCodec(Codec):
        tag = TAG

        def write(self, group: h5py.Group, block: IsotropicBlock) -> None:
            write_array(group, "scale", block.scale)

        def read(self, group: h5py.Group, header: Header) -> CurvatureBlock:
            return IsotropicBlock(header.module, header.param_names, header.param_shapes, read_tensor(group["scale"]))

        def expected(self, group: h5py.Group, shapes: list[list[int]], where: str, path: Path):
            return {"scale": ((), FLOAT_DTYPES)}

        def arrays(self, block: IsotropicBlock):
            return [("scale", block.scale, "nonnegative")]

    return SimpleNamespace(Block=IsotropicBlock, Structure=IsotropicStructure, Codec=IsotropicCodec)


@pytest.fixture(scope="module")
def toy() -> Iterator[SimpleNamespace]:
    classes = _define_toy_structure()
    yield classes
    del STRUCTURES[TAG], CODECS[TAG]


@pytest.fixture(scope="module")
def toy_file(toy, tmp_path_factory) -> tuple[Path, Curvature, MLP]:
    """A factor file of the real digits MLP whose blocks are the toy structure's, from its real GGN diagonal."""
    torch.manual_seed(0)
    model = MLP(**KWARGS)
    x, y = torch.randn(N_DATA, 1, 2, 2), torch.randint(0, 2, (N_DATA,))
    diag = compute_curvature(model, [(x, y)], method="diag")
    blocks = [toy.Block(b.module, b.param_names, b.param_shapes, torch.cat([d.reshape(-1) for d in b.value_tensors()]).mean())
              for b in diag.blocks]
    curvature = replace(diag, blocks=blocks)
    path = tmp_path_factory.mktemp("toy") / "toy.h5"
    write_factor_file(path, curvature, state_dict=model.state_dict(), model_meta=META,
                      fingerprint=weights_fingerprint(model), checkpoint_path=str(path.with_suffix(".safetensors")),
                      fit={"dataset": "digits", "split": "train"}, prior=PriorSettings(prior_precision=TAU))
    return path, curvature, model


def test_declaring_the_classes_fills_both_tables(toy):
    assert STRUCTURES[TAG] is toy.Structure
    assert type(CODECS[TAG]) is toy.Codec


def test_the_toy_block_round_trips_through_a_factor_file(toy_file, toy):
    path, curvature, _ = toy_file
    with h5py.File(path) as f:
        assert f["blocks/0"].attrs["structure"] == TAG
    read = read_factor_file(path).curvature.blocks
    assert [type(b) for b in read] == [toy.Block] * len(curvature.blocks)
    for stored, written in zip(read, curvature.blocks):
        assert (stored.module, stored.param_names, stored.param_shapes) == (written.module, written.param_names,
                                                                          written.param_shapes)
        torch.testing.assert_close(stored.scale, written.scale, rtol=0, atol=0)


def test_the_opened_posterior_answers_the_protocol_in_closed_form(toy_file, toy):
    path, curvature, model = toy_file
    post = open_posterior(path).posterior
    assert all(type(spec) is toy.Structure for spec in post.specs)
    variances = post.marginal_variance()
    for block in curvature.blocks:
        precision = N_DATA * float(block.scale) + TAU
        for name in block.param_names:
            torch.testing.assert_close(variances[name], torch.full_like(variances[name], 1 / precision))
        assert math.isclose(post.log_det_precision()[block.module], block.num_params * math.log(precision), rel_tol=1e-5)
        assert math.isclose(post.effective_params()[block.module],
                            block.num_params * (precision - TAU) / precision, rel_tol=1e-5)
    samples = post.sample(3, generator=torch.Generator().manual_seed(0))
    assert {n: tuple(s.shape) for n, s in samples.items()} == {n: (3, *p.shape) for n, p in model.named_parameters()}
    assert math.isfinite(post.log_marginal_likelihood(-10.0))


def test_report_reads_the_toy_file_through_the_cli(toy_file, run_cli):
    path, curvature, _ = toy_file
    code, out, err = run_cli("report", path, "--json")
    assert code == 0, err
    layers = json.loads(out)["layers"]
    assert [layer["name"] for layer in layers] == [b.module for b in curvature.blocks]


def test_the_codecs_value_rules_guard_the_toy_file(toy_file, tmp_path, run_cli):
    damaged = tmp_path / "negative.h5"
    damaged.write_bytes(toy_file[0].read_bytes())
    with h5py.File(damaged, "r+") as f:
        f["blocks/0/scale"][()] = -1.0
    code, out, err = run_cli("report", damaged)
    assert code == 2 and out == ""
    assert "/blocks/0/scale has the negative value" in err and len(err.strip().splitlines()) == 1


def test_a_second_class_declaring_a_taken_tag_fails_when_defined():
    with pytest.raises(TypeError, match="two codecs declare 'diagonal'"):
        type("AnotherDiagonalCodec", (Codec,), {"tag": "diagonal"})
    with pytest.raises(TypeError, match="two posterior structures declare 'kronecker'"):
        type("AnotherKronecker", (FlatPacked,), {"tag": "kronecker", "__module__": __name__})
    assert type(CODECS["diagonal"]).__name__ == "DiagonalCodec"
    assert STRUCTURES["kronecker"].__name__ == "KroneckerStructure"


def test_a_method_outside_the_vocabulary_or_a_predictive_without_its_flags_fails_when_defined():
    with pytest.raises(TypeError, match="'magic' is not a member of core.vocabulary.Method"):
        type("MagicMethod", (CurvatureMethod,), {"name": "magic"})
    assert "magic" not in METHODS
    with pytest.raises(TypeError, match="does not declare sampled, attackable, regression, colour, line_style"):
        class HalfDeclared(Predictive, kind=PredictiveKind.map, uses_laplace=False):
            pass
    assert type(PREDICTIVES[PredictiveKind.map]).__name__ == "MapPredictive"
