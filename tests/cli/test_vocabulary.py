"""One vocabulary (issue 12.3): the CLI's choices are the vocabulary's, the library takes a member or its
string and refuses anything else once, naming the choices; files and JSON hold the plain strings."""

from __future__ import annotations

import json
import typing
from enum import Enum

import h5py
import numpy as np
import pytest
import torch
from torch import nn

from uncert_cli.checkpoint import LoadedModel, ModelMeta
from uncert_cli.cli.main import app
from uncert_cli.curvature.methods import METHODS
from uncert_cli.data.arrays import dataset_from_arrays
from uncert_cli.errors import UserError
from uncert_cli.fitting import FitOptions, fit_to_file, validate_options
from uncert_cli.posterior import LaplacePosterior
from uncert_cli.curvature import compute_curvature
from uncert_cli import vocabulary as V

# (command, option) -> the vocabulary class whose values it offers
VOCABULARY_OPTIONS = {
    ("fit", "method"): V.Method,
    ("fit", "fisher"): V.FisherType,
    ("fit", "task"): V.Task,
    ("fit", "prior_mode"): V.PriorMode,
    ("track", "method"): V.Method,
    ("tune", "objective"): V.Objective,
    ("tune", "prior_structure"): V.PriorStructure,
    ("tune", "predictive"): V.TunePredictive,
    ("ood", "objective"): V.HeldOutObjective,
    ("attack", "objective"): V.HeldOutObjective,
}


def _option_enums() -> dict[tuple[str, str], type[Enum]]:
    """The Enum type of every option of every command, read from the commands' own annotations."""
    found = {}
    for info in app.registered_commands:
        hints = typing.get_type_hints(info.callback, include_extras=True)
        for param, hint in hints.items():
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
            for candidate in (base, *typing.get_args(base)):  # Optional[E] is Union[E, None]
                if isinstance(candidate, type) and issubclass(candidate, Enum):
                    found[(info.name, param)] = candidate
    return found


def test_cli_choices_are_the_vocabulary():
    options = _option_enums()
    for key, vocabulary in VOCABULARY_OPTIONS.items():
        assert options[key] is vocabulary, key
    # every other Enum option is a CLI-only choice (device, split, dtype, prune criterion), not a library word
    others = {cls.__name__ for key, cls in options.items() if key not in VOCABULARY_OPTIONS}
    assert others <= {"DeviceChoice", "SplitChoice", "DtypeChoice", "CriterionChoice"}, others


def test_method_table_and_vocabulary_agree():
    assert tuple(METHODS) == V.Method.choices()
    assert all(isinstance(name, V.Method) for name in METHODS)


def test_members_are_their_strings():
    assert V.Method.kfac_diag == "kfac-diag" and f"{V.Method.kfac_diag}" == "kfac-diag"
    assert json.dumps({"m": V.Objective.val_nll}) == '{"m": "val-nll"}'


@pytest.mark.parametrize("vocabulary", [V.Method, V.FisherType, V.Task, V.PriorMode, V.PredictiveKind,
                                        V.Objective, V.HeldOutObjective, V.PriorStructure])
def test_parse_takes_members_and_strings_and_lists_the_choices(vocabulary):
    first = next(iter(vocabulary))
    assert vocabulary.parse(first, "x") is first
    assert vocabulary.parse(first.value, "x") is first
    with pytest.raises(UserError) as err:
        vocabulary.parse("nope", "some_param")
    assert err.value.param == "some_param"
    assert str(err.value) == f"unknown some param 'nope'; use one of {', '.join(vocabulary.choices())}"
    with pytest.raises(UserError):
        vocabulary.parse(3, "some_param")


def test_library_entry_points_refuse_unknown_words():
    with pytest.raises(UserError, match="unknown method 'kfc'; use one of diag, kfac, full, lowrank, ekfac, kfac-diag"):
        validate_options(FitOptions(method="kfc"))
    with pytest.raises(UserError, match="unknown fisher type 'exactly'") as err:
        validate_options(FitOptions(fisher_type="exactly"))
    assert err.value.param == "fisher_type"
    model = nn.Sequential(nn.Linear(4, 3))
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.raises(UserError, match="unknown task 'ranking'"):
        compute_curvature(model, [(x, y)], method="kfac", task="ranking")
    curvature = compute_curvature(model, [(x, y)], method=V.Method.kfac)
    with pytest.raises(UserError, match="unknown prior mode 'exact'; use one of eigen, factor"):
        LaplacePosterior(curvature, model, prior_mode="exact")
    assert LaplacePosterior(curvature, model, prior_mode=V.PriorMode.factor).prior_mode == "factor"


def test_members_given_to_the_library_are_stored_as_plain_text(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    rng = np.random.default_rng(0)
    data = dataset_from_arrays("t", rng.standard_normal((16, 4), dtype=np.float32), rng.integers(0, 3, 16))
    meta = ModelMeta(arch="t", arch_kwargs={}, input_shape=(4,), task="classification", num_outputs=3)
    by_member, by_string = tmp_path / "member.h5", tmp_path / "string.h5"
    for path, method, fisher in ((by_member, V.Method.ekfac, V.FisherType.empirical), (by_string, "ekfac", "empirical")):
        options = FitOptions(method=method, fisher_type=fisher, batch_size=8)
        fit_to_file(LoadedModel(model, meta, tmp_path / "m.safetensors", "t"), data, options, path)
    with h5py.File(by_member) as a, h5py.File(by_string) as b:
        for key in ("method", "fisher_type", "task"):
            assert type(a["fit"].attrs[key]) is str and a["fit"].attrs[key] == b["fit"].attrs[key]
        assert a["fit"].attrs["method"] == "ekfac"
        np.testing.assert_array_equal(a["blocks/0/eigenvalues"][()], b["blocks/0/eigenvalues"][()])
