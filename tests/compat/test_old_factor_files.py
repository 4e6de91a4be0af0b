"""Factor files written by an earlier uncert still open and give the same numbers and the same JSON.

``files/<method>.h5`` were written by ``make_files.py`` (see there) before the structures were
reorganised; ``files/<method>.json`` hold what that code answered. A change that alters a number of
the posterior, a key of ``report --json`` or the reading of a stored block fails here.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import h5py
import pytest
import torch

from tests.compat.make_files import _checkpoint, _fit
from tests.compat.numbers import FILES, METHODS, posterior_numbers, report_document

RTOL = 1e-4  # float32 posteriors; the same arithmetic in another order moves the last digits only
ATOL = 1e-7


def assert_same(actual: Any, expected: Any, where: str = "") -> None:
    """Equal structure, equal strings and booleans, numbers within RTOL/ATOL."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict), f"{where}: {type(actual).__name__} instead of an object"
        assert sorted(actual) == sorted(expected), f"{where}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_same(actual[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: length differs"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same(a, e, f"{where}[{i}]")
    elif isinstance(expected, float) or (isinstance(expected, int) and isinstance(actual, float)):
        assert isinstance(actual, (int, float)) and not isinstance(actual, bool), f"{where}: {actual!r}"
        assert math.isclose(actual, expected, rel_tol=RTOL, abs_tol=ATOL), f"{where}: {actual!r} != {expected!r}"
    else:
        assert actual == expected and type(actual) is type(expected), f"{where}: {actual!r} != {expected!r}"


def _expected(method: str) -> dict[str, Any]:
    return json.loads((FILES / f"{method}.json").read_text())


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("method", METHODS)
def test_old_file_gives_the_same_posterior_numbers(method: str) -> None:
    assert_same(posterior_numbers(FILES / f"{method}.h5"), _expected(method)["posterior"], method)


@pytest.mark.parametrize("method", METHODS)
def test_old_file_gives_the_same_report_json(method: str) -> None:
    report = report_document(FILES / f"{method}.h5")
    assert report["fit"]["method"] == method
    assert_same(report, _expected(method)["report"], f"{method} report")


def _layout(path: Path) -> dict[str, Any]:
    """Every group, attribute (except when and by which version) and dataset shape/dtype of a file."""
    entries: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            attrs = {k: str(v) for k, v in obj.attrs.items() if k not in ("created", "uncert_version", "seconds",
                                                                          "peak_memory_bytes", "checkpoint_path")}
            shape = (tuple(obj.shape), str(obj.dtype)) if isinstance(obj, h5py.Dataset) else "group"
            entries[name] = (shape, attrs)
        visit("/", f)
        f.visititems(visit)
    return entries


def test_a_new_fit_writes_the_old_layout(tmp_path: Path) -> None:
    """The writer still produces the checked-in files' groups, dataset shapes and attributes (new
    attributes allowed, as later versions record more)."""
    checkpoint = _checkpoint(tmp_path)
    for method in METHODS:
        fresh = tmp_path / f"{method}.h5"
        _fit(checkpoint, method, fresh)
        new, old = _layout(fresh), _layout(FILES / f"{method}.h5")
        assert sorted(new) == sorted(old), method
        for name in old:
            new_shape, new_attrs = new[name]
            old_shape, old_attrs = old[name]
            assert new_shape == old_shape, f"{method} {name}"
            # attributes may be added (a later format records more) but none of the old ones may go;
            # values that are numbers of the fit may differ in the last digits between runs
            assert set(old_attrs) <= set(new_attrs), f"{method} {name}: {sorted(set(old_attrs) - set(new_attrs))}"
            for key in ("structure", "module", "param_names", "param_shapes", "method", "task", "fisher_type",
                        "format", "format_version"):
                if key in old_attrs:
                    assert new_attrs[key] == old_attrs[key], f"{method} {name} {key}"
