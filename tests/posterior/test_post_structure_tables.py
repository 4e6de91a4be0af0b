"""The three self-registering tables that make up a structure agree, and nothing outside a structure's class
asks its type."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from tests.reference.cases import case
from uncert_cli.curvature.blocks import CurvatureBlock
from uncert_cli.curvature.methods import METHODS, BuildRequest
from uncert_cli.posterior.structures import STRUCTURES, structure_for
from uncert_cli.store_codecs import CODECS

SRC = Path(__file__).resolve().parents[2] / "src" / "uncert_cli"


def _descendants(cls: type) -> list[type]:
    return [d for sub in cls.__subclasses__() for d in (sub, *_descendants(sub))]


BLOCK_TYPES = {cls.__name__ for cls in _descendants(CurvatureBlock) if cls.__module__.startswith("uncert_cli.")}
STRUCTURE_TYPES = {cls.__name__ for cls in STRUCTURES.values()} | {"DiagSpec", "KronSpec", "DenseSpec", "LowRankSpec"}


def _leaf_block_types(cls: type = CurvatureBlock) -> list[type]:
    """The package's block classes nothing derives from (shared bases such as ``KroneckerEigenBlock`` carry
    no tag; test modules' own blocks, as in test_post_new_structure.py, are left out).
    """
    subclasses = [sub for sub in cls.__subclasses__() if sub.__module__.startswith("uncert_cli.")]
    return [leaf for sub in subclasses for leaf in _leaf_block_types(sub)] if subclasses else [cls]


def test_every_block_tag_has_a_codec_and_a_posterior_structure():
    tags = {cls.structure for cls in _leaf_block_types()}
    assert len(tags) == len(_leaf_block_types())  # one tag per block class
    assert tags == set(CODECS) == set(STRUCTURES)
    assert all(codec.tag == tag for tag, codec in CODECS.items())


@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_builds_blocks_the_posterior_and_the_store_know(method):
    c = case("mlp-cls")
    builder = METHODS[method]
    curvature = builder.build(c.model, c.source(), BuildRequest(task=c.task, rank=2 if builder.takes_rank else None))
    assert curvature.method == method and curvature.n_data == len(c.x)
    params = dict(c.model.named_parameters())
    for block in curvature.blocks:
        assert block.structure in CODECS
        spec = structure_for(block, params)
        assert spec.tag == block.structure and spec.num_params == block.num_params
    # the estimate of what is stored covers at least one number per parameter
    units_elements = builder.stored_elements(c.model, _units(c.model), 2 if builder.takes_rank else None)
    assert units_elements >= sum(b.num_params for b in curvature.blocks)


def _units(model):
    from uncert_cli.curvature.subset import select_units

    return select_units(model, "all")


def _isinstance_checks(types: set[str]) -> list[tuple[str, int, str]]:
    """``(file, line, text)`` of every ``isinstance`` on one of ``types`` in src/."""
    pattern = re.compile(r"isinstance\([^)]*\b(" + "|".join(sorted(types)) + r")\b")
    hits = []
    for path in sorted(SRC.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                hits.append((str(path.relative_to(SRC)), number, line.strip()))
    return hits


def test_no_isinstance_dispatch_on_block_or_structure_types():
    """Each structure answers for itself (issue 12): no module branches on block or structure classes."""
    assert _isinstance_checks(BLOCK_TYPES | STRUCTURE_TYPES | {"KroneckerEigen"}) == []


def test_a_structure_moves_and_copies_to_float64():
    c = case("mlp-cls")
    curvature = METHODS["kfac"].build(c.model, c.source(), BuildRequest(task=c.task))
    spec = structure_for(curvature.blocks[0], dict(c.model.named_parameters()))
    moved = spec.to("cpu")
    prec = moved.precision(0.5, 10.0)
    torch.testing.assert_close(prec, spec.precision(0.5, 10.0))
    low = spec.to_float64()
    assert low.kronecker_eigen.input_eigenvectors.dtype == torch.float64
