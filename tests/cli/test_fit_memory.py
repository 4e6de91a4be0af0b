"""``uncert fit``'s predicted peak memory against the measured peak, and the --max-memory rules (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from uncert_cli.fit_memory import eigh_working_bytes, probe_forward
from uncert_cli.curvature.subset import select_units

# Runs in a fresh process, so that the peak resident set size is this fit's alone. A small fit first
# pays the one-time costs (lazy imports on the first backward, HDF5 filters) that the prediction
# does not model; then the measured fit's predicted addition is compared with the measured one.
CHILD = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    import numpy as np, torch
    from torch import nn
    from uncert_cli.checkpoint import LoadedModel, ModelMeta
    from uncert_cli.data.adapt import adapt_to_model
    from uncert_cli.data.arrays import dataset_from_arrays
    from uncert_cli.fitting import FitOptions, check_memory, fit_to_file

    torch.set_num_threads(1)
    method, width, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    conv = kind == "conv"
    rng = np.random.default_rng(0)

    def run(module, n, folder):
        shape = {"conv": (3, 16, 16), "lstm": (32, 16), "transformer": (64, 16)}.get(kind, (64,))
        data = dataset_from_arrays("t", rng.standard_normal((n, *shape), dtype=np.float32), rng.integers(0, 10, n))
        data = adapt_to_model(data, shape)  # (N, T, F) sequences, not grey images
        meta = ModelMeta(arch="t", arch_kwargs={}, input_shape=shape, task="classification", num_outputs=10)
        options = FitOptions(method=method, batch_size=32, max_memory=1 << 40)
        memory = check_memory(module, options, data)
        fit_to_file(LoadedModel(module, meta, Path(folder) / "m.safetensors", "t"), data, options,
                    Path(folder) / "f.h5", memory=memory)
        return memory

    class LSTMNet(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.rnn, self.head = nn.LSTM(16, w, num_layers=2, batch_first=True), nn.Linear(w, 10)

        def forward(self, x):
            return self.head(self.rnn(x)[0][:, -1])

    class EncoderNet(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.embed, self.head = nn.Linear(16, w), nn.Linear(w, 10)
            layer = nn.TransformerEncoderLayer(w, 4, dim_feedforward=2 * w, dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)

        def forward(self, x):
            return self.head(self.encoder(self.embed(x)).mean(1))

    def net(w):
        torch.manual_seed(0)
        if kind == "lstm":
            return LSTMNet(w).eval()
        if kind == "transformer":
            return EncoderNet(w).eval()
        if conv:
            return nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, w, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * w, 10)).eval()
        return nn.Sequential(nn.Linear(64, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10)).eval()

    with tempfile.TemporaryDirectory() as folder:
        run(net(8), 8, folder)
        memory = run(net(width), 64, folder)
    # This process's own high-water mark (VmHWM: reset by exec). ru_maxrss is not: Linux carries the
    # forking parent's resident size over to the child, so under a large pytest process it read the
    # parent's 1.2 GB in every case.
    status = Path("/proc/self/status").read_text()
    peak = int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))) * 1024
    print(json.dumps({"predicted": memory.peak, "added": memory.added, "before": memory.before, "measured": peak}))
    """
)


def measure(method: str, width: int, kind: str = "mlp") -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, method, str(width), kind], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "method,width,kind", [("kfac", 1500, "mlp"), ("diag", 1500, "mlp"), ("kfac", 96, "conv"), ("diag", 256, "lstm")]
)
def test_predicted_peak_holds_within_a_quarter_of_the_measured_peak(method, width, kind):
    r = measure(method, width, kind)
    measured_added = r["measured"] - r["before"]
    # The whole peak (what --max-memory bounds) within 25%, and the part the fit adds within 70%
    # (the added part is 40-100 MiB here, where allocator slack of a few MiB is already a few percent;
    # the conv KFAC case, its vectors now propagated one at a time and the heap trimmed after each
    # batch, measured 43-51 MiB against a predicted 67-70: the slack of a smaller fit).
    assert abs(r["predicted"] - r["measured"]) <= 0.25 * r["measured"], r
    assert abs(r["added"] - measured_added) <= 0.7 * measured_added, r


@pytest.mark.parametrize("method,width,kind", [("kfac", 256, "lstm"), ("diag", 256, "transformer"),
                                               ("kfac", 256, "transformer")])
def test_predicted_peak_of_a_sequence_fit_is_not_under_the_measured_peak(method, width, kind):
    """A prediction under the peak lets --max-memory pass a fit that then exceeds it. The LSTM's
    recurrent diagonal and the transformer's vmapped attention re-runs (generic path) are the parts
    the prediction used to miss (by 8-34%, docs/benchmarks.md)."""
    r = measure(method, width, kind)
    measured_added = r["measured"] - r["before"]
    assert r["predicted"] >= r["measured"], r
    assert r["predicted"] <= 1.25 * r["measured"], r
    # The part the fit adds (100-220 MiB here, beside ~700 MiB of libraries) is what the prediction
    # computes: at most twice the measured (measured 1.3-1.7x: the heap margin is sized for batches
    # of 100, and these are 32).
    assert r["added"] <= 2 * measured_added, r


def test_probe_counts_what_autograd_keeps_per_example():
    model = torch.nn.Sequential(torch.nn.Linear(10, 50), torch.nn.ReLU(), torch.nn.Linear(50, 3))
    units = select_units(model, "all")
    probe = probe_forward(model, units, torch.randn(1, 10))
    # Linear 1 keeps its input (10), ReLU its output (50), Linear 2 its input (shared with ReLU's output).
    assert probe.saved_bytes == (10 + 50) * 4
    assert probe.unit_output_elements == 50 + 3 and probe.output_width == 3 and probe.positions == (1, 1)


def test_probe_counts_a_recurrent_layers_gates_and_states():
    """The fit propagates its vectors to an LSTM's gates (4H per step and layer), not its outputs,
    and keeps each step's starting state (H per step and layer)."""

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn, self.head = torch.nn.LSTM(3, 4, num_layers=2, batch_first=True), torch.nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.rnn(x)[0][:, -1])

    model = Net()
    probe = probe_forward(model, select_units(model, "all"), torch.randn(1, 5, 3))
    assert probe.unit_output_elements == 2 * 5 * 4 * 4 + 3
    assert probe.saved_bytes >= 2 * 5 * 4 * 4  # at least the states, in float32
    head_only = probe_forward(model, select_units(model, "head"), torch.randn(1, 5, 3))
    assert head_only.unit_output_elements == 3  # a layer outside the subset has no vectors sent to it


def test_eigh_working_set_is_lapack_syevd():
    n = 100
    # float32 factor: a float64 copy, the eigenvectors and syevd's 1 + 6n + 2n² workspace, all float64.
    assert eigh_working_bytes(n, 4) == 8 * n * n + 8 * n * n + 8 * (1 + 6 * n + 2 * n * n)
    assert eigh_working_bytes(n, 8) == 8 * n * n + 8 * (1 + 6 * n + 2 * n * n)


def test_every_method_has_the_same_default_cap(run_cli, digits_checkpoint, tmp_path, monkeypatch):
    # Without --max-memory the cap is the memory available on this machine, for kfac and diag as for
    # full and lowrank: a machine with 1 MiB available refuses them all, naming the option to raise.
    import uncert_cli.fitting as fitting

    monkeypatch.setattr(fitting, "available_memory_bytes", lambda device: 1 << 20)
    for method in ("kfac", "diag", "lowrank", "full", "ekfac", "kfac-diag"):
        out = tmp_path / f"{method}.h5"
        r = run_cli("fit", digits_checkpoint, "--data", "digits", "--method", method, "-o", out)
        assert r.code == 2, (method, r.err)
        assert "available on this machine" in r.err or "more than 1.0 MiB" in r.err, r.err
        assert "--max-memory" in r.err and not out.exists()
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "--max-memory", "64GiB",
                "-o", tmp_path / "ok.h5", "-q")
    assert r.code == 0, r.err


def test_estimate_is_announced_on_stderr_but_not_with_json(run_cli, digits_checkpoint, tmp_path, monkeypatch):
    import uncert_cli.cli.fit as fit_cli

    monkeypatch.setattr(fit_cli, "ANNOUNCE_PEAK", 0)  # announce for this small fit too
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "-o", tmp_path / "a.h5")
    assert r.code == 0 and "kfac fit: about" in r.err and "at its peak" in r.err
    assert "at its peak" not in r.out
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "-o", tmp_path / "b.h5", "--json")
    assert r.code == 0 and "at its peak" not in r.err
    doc = json.loads(r.out)
    assert doc["estimated_peak_memory_bytes"] > 0


def test_a_small_fit_in_a_large_process_is_not_announced(run_cli, digits_checkpoint, tmp_path):
    # What the fit adds decides: a notebook or test run already holding over 1 GiB announced every fit.
    held = torch.ones(3 << 27, dtype=torch.float32)  # 1.5 GiB, touched, so resident
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--limit", "64", "-o", tmp_path / "a.h5")
    assert float(held[-1]) == 1.0
    assert r.code == 0 and "at its peak" not in r.err, r.err


def test_a_refusal_offers_only_ways_that_lower_this_fits_peak(run_cli, digits_checkpoint, tmp_path):
    # A cap below what the process holds before the fit: no option of the fit helps, so none is offered
    # (it suggested --method diag to a diag fit, and a smaller batch where memory was not the batch's).
    r = run_cli("fit", digits_checkpoint, "--data", "digits", "--method", "diag", "--max-memory", "1KiB",
                "-o", tmp_path / "f.h5")
    assert r.code == 2 and not (tmp_path / "f.h5").exists()
    assert "before the fit starts" in r.err and "raise --max-memory" in r.err
    assert "--method diag" not in r.err and "--batch-size" not in r.err


def test_the_ways_offered_follow_the_fit_and_the_data():
    import numpy as np

    from uncert_cli.data.arrays import dataset_from_arrays
    from uncert_cli.fitting import FitOptions
    from uncert_cli.workflows.fit import _ways_to_less_memory
    from uncert_cli.workflows.fit_memory import MemoryEstimate

    rng = np.random.default_rng(0)
    images = dataset_from_arrays("big", rng.random((2, 3, 64, 64), dtype=np.float32), np.array([0, 1]))
    batch_heavy = MemoryEstimate(before=100, weights=1, factors=1, batch=1000, finish=0)
    text, names = _ways_to_less_memory(FitOptions(method="diag", batch_size=1), images, batch_heavy, cap=500)
    assert text == "shrink the images with {resize}, or fit a part with {subset} last-layer"
    assert names == ("resize", "subset")
    text, names = _ways_to_less_memory(FitOptions(method="kfac", fisher_type="mc", mc_samples=4, subset="last-layer"),
                                       images, MemoryEstimate(100, 1, 1000, 10, 0), cap=500)
    assert text == "lower {batch_size} or {mc_samples}, or use {method} diag"
    assert names == ("batch_size", "mc_samples", "method")


def test_max_memory_counts_what_is_in_use_now_not_an_earlier_freed_peak():
    """A large array read and freed in the same process (a notebook) raised the process's historical
    peak above a tight --max-memory, and a fit that itself fits was refused. The check is the memory in
    use now plus what the fit adds; a fit that needs more than the cap is still refused."""
    import numpy as np

    from uncert_cli.core.errors import UserError
    from uncert_cli.core.memory import current_memory_bytes, peak_memory_bytes
    from uncert_cli.data.arrays import dataset_from_arrays
    from uncert_cli.workflows.fit import FitOptions, check_memory

    cpu = torch.device("cpu")
    rng = np.random.default_rng(0)
    data = dataset_from_arrays("t", rng.standard_normal((64, 64), dtype=np.float32), rng.integers(0, 10, 64))
    torch.manual_seed(0)
    small = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
    large = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 2048),
                                torch.nn.ReLU(), torch.nn.Linear(2048, 10)).eval()
    unbounded = FitOptions(method="kfac", batch_size=32, max_memory=1 << 40)
    small_adds = check_memory(small, unbounded, data).added
    large_adds = check_memory(large, unbounded, data).added
    assert large_adds > 64 << 20  # the large fit's factors and eigendecompositions

    loaded = torch.ones(3 << 27)  # 1.5 GiB, touched: the "large data set" read before the fit ...
    assert float(loaded[-1]) == 1.0
    del loaded  # ... and freed (glibc returns a block this size to the system at once)
    in_use = current_memory_bytes(cpu)
    cap = in_use + small_adds + (128 << 20)  # room for this fit, far below the freed peak
    assert peak_memory_bytes(cpu) > cap + (512 << 20)

    estimate = check_memory(small, FitOptions(method="kfac", batch_size=32, max_memory=cap), data)
    assert estimate.peak <= cap and estimate.peak == estimate.before + estimate.added
    with pytest.raises(UserError, match="more than max_memory"):
        check_memory(large, FitOptions(method="kfac", batch_size=32, max_memory=in_use + large_adds // 2), data)
