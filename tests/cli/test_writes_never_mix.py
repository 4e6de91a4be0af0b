"""Issues 21 and 11: writes that never mix, lose or leak data.

tune's read-modify-write against concurrent writers, kept permissions and followed symlinks, outputs
that would overwrite an input, temporaries of killed writes, and Ctrl-C at any moment.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import pytest

import uncert_cli.tuning
from uncert_cli.atomic import atomic_output, write_bytes
from uncert_cli.errors import UserError
from uncert_cli.store import read_factor_file
from uncert_cli.tuning import TuneOutcome, tune_factor_file

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "sample_models"


def fit(run_cli, checkpoint, target: Path, *extra: str) -> Path:
    r = run_cli("fit", checkpoint, "--data", "digits", "--limit", "64", "-o", target, "-q", *extra)
    assert r.code == 0, r.err
    return target


def tuning_record(path: Path) -> dict | None:
    with h5py.File(path, "r") as f:
        return dict(f["tuning"].attrs) if "tuning" in f else None


# --- (a) tune never writes into a file that changed while it ran ------------------------------------


def test_tune_refuses_when_fit_replaces_the_file_meanwhile(run_cli, tmp_path, digits_checkpoint, monkeypatch):
    factors = fit(run_cli, digits_checkpoint, tmp_path / "f.h5")
    real_tune = uncert_cli.tuning.tune_prior_marglik

    def tune_while_another_fit_replaces_the_file(*args, **kwargs):
        # What a second terminal does while tune computes: a fit of another model onto the same path.
        assert fit(run_cli, SAMPLES / "digits_mlp.safetensors", factors, "--prior-precision", "7").exists()
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(uncert_cli.tuning, "tune_prior_marglik", tune_while_another_fit_replaces_the_file)
    r = run_cli("tune", factors, "--prior-structure", "layer")
    replaced_by_fit = read_factor_file(factors)
    assert r.code == 2 and "replaced or changed" in r.err and r.err.count("\n") == 1, r.err
    # The other fit's file is intact: its own τ, no tuning record mixed in.
    assert replaced_by_fit.prior.prior_precision == 7
    assert tuning_record(factors) is None


def test_concurrent_tunes_never_lose_an_update_silently(run_cli, tmp_path, digits_checkpoint):
    factors = fit(run_cli, digits_checkpoint, tmp_path / "f.h5")
    structures = ["scalar", "layer", "scalar", "layer"]
    outcomes: list[object] = [None] * len(structures)

    def tune(i: int) -> None:
        try:
            outcomes[i] = tune_factor_file(factors, structure=structures[i])
        except UserError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=tune, args=(i,)) for i in range(len(structures))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [o for o in outcomes if isinstance(o, UserError)]
    written = [o for o in outcomes if isinstance(o, TuneOutcome)]
    assert len(refused) + len(written) == len(structures), outcomes
    assert all("replaced or changed" in str(o) for o in refused)
    assert written, "at least one tune must succeed"
    # A lost update is two successes that read the same version of the file: the later rename drops
    # the earlier one's result. Only one success can have started from the untuned file (τ = 1).
    assert sum(o.before.prior_precision == 1.0 for o in written) == 1, [o.before for o in written]
    # The file holds exactly what one successful tune reported, and is a valid factor file.
    final = json.loads(tuning_record(factors)["result"])
    assert any(final["prior_precision"] == o.to_dict()["prior_precision"] for o in written)
    assert read_factor_file(factors).prior.prior_precision == final["prior_precision"]


# --- (b) permissions, owner and symbolic links -------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o444, 0o640])
def test_tune_keeps_the_file_mode(run_cli, tmp_path, digits_checkpoint, mode):
    factors = fit(run_cli, digits_checkpoint, tmp_path / "f.h5")
    os.chmod(factors, mode)
    owner = os.stat(factors).st_uid, os.stat(factors).st_gid
    assert run_cli("tune", factors, "-q").code == 0
    st = os.stat(factors)
    assert stat.S_IMODE(st.st_mode) == mode
    assert (st.st_uid, st.st_gid) == owner
    assert tuning_record(factors) is not None


def test_tune_through_a_symlink_updates_the_target_and_keeps_the_link(run_cli, tmp_path, digits_checkpoint):
    (tmp_path / "real").mkdir()
    factors = fit(run_cli, digits_checkpoint, tmp_path / "real" / "f.h5")
    link = tmp_path / "link.h5"
    link.symlink_to(factors)
    assert run_cli("tune", link, "-q").code == 0
    assert link.is_symlink() and link.resolve() == factors.resolve()
    assert tuning_record(factors) is not None
    assert [p.name for p in (tmp_path / "real").iterdir()] == ["f.h5"]


def test_writes_replace_an_existing_file_with_its_mode(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    os.chmod(target, 0o600)
    write_bytes(target, b"new")
    assert target.read_bytes() == b"new" and stat.S_IMODE(os.stat(target).st_mode) == 0o600


# --- (c) an output is never one of the command's inputs ----------------------------------------------


def test_fit_refuses_to_write_onto_its_data_file(run_cli, tmp_path, digits_checkpoint):
    import numpy as np

    data = tmp_path / "my.h5"
    with h5py.File(data, "w") as f:
        f["images"] = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
        f["labels"] = np.arange(20) % 10
    before = data.read_bytes()
    r = run_cli("fit", digits_checkpoint, "--data", data, "-o", data, "-q")
    assert r.code == 2 and "one of this command's inputs" in r.err and r.err.count("\n") == 1, r.err
    assert data.read_bytes() == before


def test_prune_refuses_to_write_onto_the_checkpoint_or_the_factor_file(run_cli, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes((SAMPLES / "digits_mlp.safetensors").read_bytes())
    factors = fit(run_cli, checkpoint, tmp_path / "f.h5")
    before = checkpoint.read_bytes()
    r = run_cli("prune", factors, "--fraction", "0.5", "-o", checkpoint)
    assert r.code == 2 and "one of this command's inputs" in r.err, r.err
    assert checkpoint.read_bytes() == before
    alias = tmp_path / "alias.safetensors"  # another name for the factor file itself
    alias.symlink_to(factors)
    factor_bytes = factors.read_bytes()
    r = run_cli("prune", factors, "--fraction", "0.5", "-o", alias)
    assert r.code == 2 and "one of this command's inputs" in r.err, r.err
    assert factors.read_bytes() == factor_bytes


# --- issue 11: temporaries of killed writes ----------------------------------------------------------


def test_the_next_write_removes_temporaries_of_killed_writes_but_not_live_ones(run_cli, tmp_path, digits_checkpoint):
    target = tmp_path / "f.h5"
    killed = (
        "import os, signal, sys\n"
        "from uncert_cli.atomic import atomic_output\n"
        "with atomic_output(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", killed, str(target)], env=env)
    assert done.returncode == -signal.SIGKILL
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".f.h5.") and p.name.endswith(".tmp")]
    assert len(stale) == 1 and not target.exists()
    with atomic_output(tmp_path / "f.h5") as live:  # a write still in progress (its lock is held)
        live.write_bytes(b"in progress")
        other = tmp_path / ".f.h5.abcdefgh.tmp"  # a temporary of the same name, locked by a live writer
        other.write_bytes(b"busy")
        with open(other, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            fit(run_cli, digits_checkpoint, target)
            assert not stale[0].exists(), "the killed write's temporary is removed"
            assert other.exists() and live.exists(), "live writers' temporaries are kept"
    assert target.read_bytes() == b"in progress"


# --- (d) Ctrl-C ---------------------------------------------------------------------------------------


def _interrupt_after(args: list[str], seconds: float, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "uncert_cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


@pytest.mark.parametrize("seconds", [0.3, 1.5])
def test_ctrl_c_during_start_up_is_one_line(tmp_path, seconds):
    # uncert toy computes for minutes before it writes anything: whatever phase the signal meets
    # (importing torch, loading, fitting), nothing has been written yet.
    done = _interrupt_after(["toy", "--png", "t.png", "--json-out", "t.json"], seconds, tmp_path)
    assert done.returncode == 130, done.stderr
    assert done.stderr == "uncert: interrupted; nothing was written\n"
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_a_command_says_what_was_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    # The demo announces each step on stderr; interrupt it once the fit's file exists (mid-pipeline).
    proc = subprocess.Popen([sys.executable, "-m", "uncert_cli", "demo", "--out", "out"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    factors = tmp_path / "out" / "digits_kfac.h5"
    while not factors.exists() and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    last = err.strip().splitlines()[-1]
    # Where the signal lands is a race: mid-step (then the line names what the demo wrote) or as a step
    # finishes (then the step says its own output is complete). Both are one truthful line.
    assert (last.startswith("uncert: interrupted; written before that: ") and "digits_kfac.h5" in last) or (
        last == "uncert: interrupted as the command finished; what it wrote is complete"
    ), err
    assert "Traceback" not in err and "uncert: error" not in err
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")] == []
