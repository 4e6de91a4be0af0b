"""Damaged factor files are refused when opened: exit 2, one line naming the dataset, nothing written.

Real factor files of every structure (tiny digits MLP fits, 64 examples) are corrupted the ways a
disk, a copy or a hostile author can (bytes flipped, datasets deleted, shapes and dtypes changed,
strings instead of numbers, NaN/inf, negative eigenvalues, version changed, a declared shape of
10^13 elements) and opened through the real CLI. Validation happens once, in ``read_factor_file``,
so the full corruption matrix runs through the cheapest command (``info``) and every command that
opens a factor file (info, report, tune, prune, ood, attack) gets one case of each kind.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from uncert_cli.cli.main import main
from uncert_cli.core.errors import UserError
from uncert_cli.storage.opening import open_posterior

METHODS = ("diag", "kfac", "ekfac", "kfac-diag", "lowrank", "full", "vi")
# Options a method needs beyond the common ones (vi: one epoch is enough for a file of its layout).
METHOD_OPTIONS = {"lowrank": ("--rank", "4"), "kfac-diag": ("--rank", "4"), "vi": ("--epochs", "1")}
# Datasets of /blocks/0 per method: (dataset, holds eigenvalues or a diagonal that must be ≥ 0).
TARGETS: dict[str, tuple[tuple[str, bool], ...]] = {
    "diag": (("diagonal/0", True), ("diagonal/1", True)),
    "kfac": (("input_factor", False), ("output_eigenvalues", True), ("input_eigenvectors", False)),
    "ekfac": (("eigenvalues", True), ("output_eigenvectors", False)),
    "kfac-diag": (("diagonal", True), ("input_eigenvalues", True), ("rank_indices", False)),
    "lowrank": (("eigenvalues", True), ("eigenvectors", False), ("diagonal", True)),
    "full": (("matrix", False), ("eigenvalues", True), ("eigenvectors", False)),
    "vi": (("diagonal/1", True), ("mean/0", False), ("mean/1", False)),  # the variational mean may be negative
}


@pytest.fixture(scope="module")
def factor_files(digits_checkpoint, tmp_path_factory) -> dict[str, Path]:
    """One real factor file per method (tiny MLP 64-16-10 on 64 digits; vi: mean-field, structure "meanfield")."""
    folder = tmp_path_factory.mktemp("factors")
    files = {}
    for method in METHODS:
        out = folder / f"{method}.h5"
        code = main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "--method", method,
                     *METHOD_OPTIONS.get(method, ()), "-o", str(out), "--quiet"])
        assert code == 0, method
        files[method] = out
    return files


# ----------------------------------------------------------------------------------- corruptions
Corruption = Callable[[h5py.File, str], None]


def _replace(f: h5py.File, name: str, data: np.ndarray) -> None:
    del f[name]
    f.create_dataset(name, data=data)


def _edit(f: h5py.File, name: str, change: Callable[[np.ndarray], None]) -> None:
    data = f[name][()].copy()
    change(data)
    _replace(f, name, data)


def strings(f, name):
    shape = f[name].shape
    _replace(f, name, np.full(shape, b"0.5"))


def nan(f, name):
    _edit(f, name, lambda a: a.reshape(-1).__setitem__(0, np.nan))


def inf(f, name):
    _edit(f, name, lambda a: a.reshape(-1).__setitem__(-1, np.inf))


def negative(f, name):
    _edit(f, name, lambda a: a.reshape(-1).__setitem__(-1, -abs(a.reshape(-1)).max() - 1.0))


def wrong_shape(f, name):
    data = f[name][()]
    _replace(f, name, np.concatenate([data, data[:1]], axis=0))


def integers(f, name):
    data = f[name][()]
    _replace(f, name, data.astype(np.int32) if data.dtype.kind == "f" else data.astype(np.float32))


def deleted(f, name):
    del f[name]


def huge(f, name):
    """A declared 10^13-element dataset: a few header bytes that would allocate 40 TB if read."""
    del f[name]
    f.create_dataset(name, shape=(10**13,), dtype="f4", chunks=(4096,), compression="gzip")


def flipped(f, name):
    """The most significant byte (sign and exponent) of the largest stored value inverted, as a bad
    disk sector or a bit-rotten copy would; the value becomes negative or NaN."""
    data = f[name][()].copy()
    flat = data.reshape(-1)
    k = int(np.abs(flat).argmax())
    raw = flat[k : k + 1].view(np.uint8)
    raw[-1 if data.dtype.byteorder in "<=" else 0] ^= 0xFF
    _replace(f, name, data)


def _in_block(corruption: Corruption, dataset: str) -> Callable[[h5py.File], None]:
    return lambda f: corruption(f, f"blocks/0/{dataset}")


def _attr(group: str, key: str, value) -> Callable[[h5py.File], None]:
    def apply(f: h5py.File) -> None:
        f[group].attrs[key] = value

    return apply


def _corrupt(source: Path, folder: Path, apply: Callable[[h5py.File], None]) -> Path:
    path = folder / "damaged.h5"
    shutil.copyfile(source, path)
    with h5py.File(path, "r+") as f:
        apply(f)
    return path


def _matrix_cases():
    for method, targets in TARGETS.items():
        for dataset, nonnegative in targets:
            kinds: list[Corruption] = [strings, nan, inf, wrong_shape, deleted, huge]
            if nonnegative:
                kinds.append(negative)
            if dataset == "rank_indices":
                kinds = [strings, wrong_shape, deleted, huge, integers, negative]
            for kind in kinds:
                yield pytest.param(method, dataset, kind, id=f"{method}-{dataset}-{kind.__name__}")


def _assert_refused(r, *, contains: str = "") -> None:
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("uncert: error:"), r.err
    assert "Traceback" not in r.err and "internal error" not in r.err
    assert contains in lines[0], lines[0]


@pytest.mark.parametrize("method, dataset, kind", list(_matrix_cases()))
def test_every_structure_refuses_each_corruption_naming_the_dataset(
    run_cli, factor_files, tmp_path, method, dataset, kind
) -> None:
    damaged = _corrupt(factor_files[method], tmp_path, _in_block(kind, dataset))
    r = run_cli("info", damaged)
    _assert_refused(r, contains=f"/blocks/0/{dataset}")
    assert "damaged" in r.err


FILE_CASES: dict[str, Callable[[h5py.File], None]] = {
    "version-newer": _attr("/", "format_version", 2),
    "version-zero": _attr("/", "format_version", 0),
    "version-text": _attr("/", "format_version", "one"),
    "structure-unknown": _attr("blocks/0", "structure", "toeplitz"),
    "param-shapes-huge": _attr("blocks/0", "param_shapes", "[[1000000, 10000000], [1000000]]"),
    "param-names-garbage": _attr("blocks/0", "param_names", "not json"),
    "fit-n-data-negative": _attr("fit", "n_data", -3),
    "fit-method-unknown": _attr("fit", "method", "magic"),
    "weights-deleted": lambda f: deleted(f, "model/state_dict/fc1.weight"),
    "weights-nan": lambda f: nan(f, "model/state_dict/fc2.bias"),
    "weights-huge": lambda f: huge(f, "model/state_dict/fc2.weight"),
    "weights-strings": lambda f: strings(f, "model/state_dict/fc2.bias"),
    "blocks-deleted": lambda f: deleted(f, "blocks"),
    "prior-not-json": _attr("prior", "prior_precision", "{oops"),
}


@pytest.mark.parametrize("case", list(FILE_CASES))
def test_file_level_damage_is_refused(run_cli, factor_files, tmp_path, case) -> None:
    damaged = _corrupt(factor_files["kfac"], tmp_path, FILE_CASES[case])
    r = run_cli("info", damaged)
    _assert_refused(r, contains=str(damaged))
    if case == "version-newer":
        assert "upgrade uncert" in r.err


# ------------------------------------------------------------------------ every command, each kind
COMMANDS = ("info", "report", "tune", "prune", "ood", "attack")
# One corruption of each kind per command; the structure rotates so every command meets several.
KINDS: tuple[tuple[str, Callable[[str], Callable[[h5py.File], None]]], ...] = (
    ("strings", lambda ds: _in_block(strings, ds)),
    ("nan", lambda ds: _in_block(nan, ds)),
    ("inf", lambda ds: _in_block(inf, ds)),
    ("wrong-shape", lambda ds: _in_block(wrong_shape, ds)),
    ("deleted", lambda ds: _in_block(deleted, ds)),
    ("huge", lambda ds: _in_block(huge, ds)),
    ("flipped", lambda ds: _in_block(flipped, ds)),
    ("version", lambda ds: _attr("/", "format_version", 5)),
)


def _command_args(command: str, path: Path, out: Path) -> list:
    if command == "report":
        return ["report", path, "--png", out / "png"]
    if command == "prune":
        return ["prune", path, "--fraction", "0.5", "-o", out / "pruned.safetensors"]
    if command in ("ood", "attack"):
        return [command, path, "--data", "digits", "--limit", "32", "--no-tune", "--png", out / "png"]
    return [command, path]


def _command_cases():
    for c, command in enumerate(COMMANDS):
        for k, (kind, _) in enumerate(KINDS):
            method = METHODS[(c + k) % len(METHODS)]
            if kind == "flipped":  # a flipped value must land where a check sees it: an eigenvalue/diagonal
                dataset = next(d for d, nonneg in TARGETS[method] if nonneg)
            else:
                dataset = TARGETS[method][(c + k) % len(TARGETS[method])][0]
            yield pytest.param(command, kind, method, dataset, id=f"{command}-{kind}-{method}-{dataset}")


@pytest.mark.parametrize("command, kind, method, dataset", list(_command_cases()))
def test_every_command_refuses_a_damaged_file_and_writes_nothing(
    run_cli, factor_files, tmp_path, command, kind, method, dataset
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    apply = dict(KINDS)[kind](dataset)
    damaged = _corrupt(factor_files[method], folder, apply)
    before = damaged.read_bytes()
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli(*_command_args(command, damaged, out))
    _assert_refused(r, contains=str(damaged))
    assert [p for p in out.rglob("*") if p.is_file()] == [], "a refused command created output"
    assert sorted(p.name for p in folder.iterdir()) == ["damaged.h5"]
    assert damaged.read_bytes() == before, "the damaged file was modified"


# ------------------------------------------------------------------- the variational mean (vi files)
MEAN_DAMAGE: dict[str, Corruption] = {"wrong-shape": wrong_shape, "nan": nan, "deleted": deleted}


@pytest.mark.parametrize("command", ["report", "ood"])
@pytest.mark.parametrize("kind", list(MEAN_DAMAGE))
def test_a_damaged_variational_mean_is_refused(run_cli, factor_files, tmp_path, command, kind) -> None:
    """The mean replaces the checkpoint's weights when a vi file is opened: a bad one must never reach the model."""
    folder = tmp_path / "in"
    folder.mkdir()
    damaged = _corrupt(factor_files["vi"], folder, _in_block(MEAN_DAMAGE[kind], "mean/0"))
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli(*_command_args(command, damaged, out))
    _assert_refused(r, contains=f"'{damaged}' is damaged: /blocks/0/mean/0")
    assert [p for p in out.rglob("*") if p.is_file()] == [], "a refused command created output"


# ----------------------------------------------------------------------------- random byte flips
@pytest.mark.parametrize("method", METHODS)
def test_random_byte_flips_never_crash(run_cli, factor_files, tmp_path, method) -> None:
    """Bytes flipped anywhere (header, metadata, compressed chunks): refused (2) or harmless (0), never 1."""
    source = factor_files[method].read_bytes()
    rng = np.random.default_rng(sum(map(ord, method)))
    codes = []
    for _ in range(12):
        data = bytearray(source)
        for offset in rng.integers(0, len(data), size=8):
            data[offset] ^= int(rng.integers(1, 256))
        damaged = tmp_path / "flipped.h5"
        damaged.write_bytes(bytes(data))
        r = run_cli("report", damaged, "--json")
        assert r.code in (0, 2), r.err
        assert "internal error" not in r.err and "Traceback" not in r.err
        if r.code == 2:
            assert len([line for line in r.err.splitlines() if line.strip()]) == 1, r.err
        codes.append(r.code)
    assert 2 in codes  # most flips are caught (checksums, decompression, value checks)


# ------------------------------------------------------------------ values read from the file (21)
@pytest.mark.parametrize("command", ["report", "prune", "ood", "attack"])
def test_bad_stored_prior_precision_names_the_file_and_the_flag(run_cli, factor_files, tmp_path, command) -> None:
    damaged = _corrupt(factor_files["kfac"], tmp_path, _attr("prior", "prior_precision", "-5"))
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli(*_command_args(command, damaged, out))
    _assert_refused(r, contains=f"'{damaged}' stores prior_precision -5")
    assert "--prior-precision" in r.err and [p for p in out.rglob("*") if p.is_file()] == []


def test_bad_stored_prior_names_the_parameter_to_a_python_caller(factor_files, tmp_path) -> None:
    damaged = _corrupt(factor_files["kfac"], tmp_path, _attr("prior", "prior_precision", "-5"))
    with pytest.raises(UserError) as refused:
        open_posterior(damaged, flags=("prior_precision", "n_data"))
    assert str(refused.value).endswith("refit it or pass prior_precision") and "--" not in str(refused.value)
    assert open_posterior(damaged, prior_precision=2.0).posterior is not None  # the override is taken


def test_bad_stored_prior_can_be_overridden_by_the_flag(run_cli, factor_files, tmp_path) -> None:
    damaged = _corrupt(factor_files["kfac"], tmp_path, _attr("prior", "prior_precision", "-5"))
    r = run_cli("report", damaged, "--prior-precision", "2", "--json")
    assert r.code == 0, r.err


def test_bad_stored_n_data_in_tune_names_the_file_without_flags_tune_lacks(run_cli, factor_files, tmp_path) -> None:
    damaged = _corrupt(factor_files["kfac"], tmp_path, _attr("prior", "n_data", "NaN"))
    before = damaged.read_bytes()
    r = run_cli("tune", damaged)
    _assert_refused(r, contains=f"'{damaged}' stores n_data NaN")
    assert "--n-data" not in r.err and "refit" in r.err
    assert damaged.read_bytes() == before


def test_tune_refuses_a_stored_log_likelihood_that_is_not_finite(run_cli, factor_files, tmp_path) -> None:
    damaged = _corrupt(factor_files["diag"], tmp_path, _attr("fit", "log_likelihood", float("nan")))
    before = damaged.read_bytes()
    r = run_cli("tune", damaged, "--objective", "marglik")  # the evidence needs it; the default (widest) does not
    _assert_refused(r, contains="stores log_likelihood nan")
    assert damaged.read_bytes() == before


def test_tune_never_writes_a_non_finite_value(factor_files, tmp_path) -> None:
    """The write itself refuses NaN/inf/≤0, whatever computed them."""
    from uncert_cli.errors import UserError
    from uncert_cli.store import PriorSettings, update_hyperparameters

    path = tmp_path / "f.h5"
    shutil.copyfile(factor_files["kfac"], path)
    before = path.read_bytes()
    for bad in (PriorSettings(prior_precision=float("nan")), PriorSettings(prior_precision={"fc1": 1.0, "fc2": float("inf")}),
                PriorSettings(prior_precision=1.0, n_data=-1.0)):
        with pytest.raises(UserError, match="nothing was written"):
            update_hyperparameters(path, bad, {"objective": "marglik"})
    assert path.read_bytes() == before
