"""Bad input: one line on stderr, exit code 2, no traceback, no output file."""

from __future__ import annotations

import os

import pytest
import torch

from uncert_cli.models import MLP


def assert_clean_failure(r, out_path=None, *, contains: str = ""):
    assert r.code == 2, (r.code, r.err)
    lines = [line for line in r.err.splitlines() if line.strip()]
    assert len(lines) == 1, r.err
    assert lines[0].startswith("uncert: error:")
    assert "Traceback" not in r.err
    assert contains.lower() in lines[0].lower(), lines[0]
    if out_path is not None:
        assert not out_path.exists()
        assert not [p for p in out_path.parent.iterdir() if p.name.startswith(f".{out_path.name}")]


def test_missing_checkpoint(run_cli, tmp_path):
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", tmp_path / "nope.safetensors", "--data", "digits", "-o", out), out,
                         contains="no such file")


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_random_bytes(run_cli, tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(os.urandom(4096))
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", path, "--data", "digits", "-o", out), out)


def test_truncated_safetensors(run_cli, digits_checkpoint, tmp_path):
    path = tmp_path / "cut.safetensors"
    path.write_bytes(digits_checkpoint.read_bytes()[:-100])
    assert_clean_failure(run_cli("info", path))


def test_state_dict_without_arch(run_cli, tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(MLP(64, [16], 10).state_dict(), path)
    assert_clean_failure(run_cli("info", path), contains="--arch")


def test_wrong_arch(run_cli, tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(MLP(64, [16], 10).state_dict(), path)
    r = run_cli("info", path, "--arch", "uncert_cli.models:MLP", "--arch-kwargs", "in_features=64",
                "--arch-kwargs", "hidden=[32]", "--arch-kwargs", "out_features=10")
    assert_clean_failure(r, contains="shape")


def test_pickle_needs_trust_flag(run_cli, tmp_path):
    path = tmp_path / "full.pt"
    torch.save(MLP(64, [16], 10), path)
    assert_clean_failure(run_cli("info", path), contains="--trust-pickle")
    r = run_cli("info", path, "--trust-pickle", "--json")
    assert r.code == 0, r.err


def test_images_that_do_not_fit_the_model(run_cli, digits_checkpoint, tmp_path, shared_data):
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--data", "mnist", "--data-root", shared_data, "--limit", "10", "-o", out)
    assert_clean_failure(r, out, contains="trained on")
    assert "--resize 8,8" in r.err  # fit converts images too (issue 11): the 8×8 digits model's size


def test_labels_out_of_range(run_cli, digits_checkpoint, tmp_path):
    import numpy as np

    data = tmp_path / "bad.npz"
    np.savez(data, x=np.random.rand(20, 1, 8, 8).astype("float32"), y=np.full(20, 12))
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "--data", data, "-o", out), out, contains="label")


def test_empty_dataset(run_cli, digits_checkpoint, tmp_path):
    import numpy as np

    data = tmp_path / "empty.npz"
    np.savez(data, x=np.zeros((0, 1, 8, 8), "float32"), y=np.zeros(0, "int64"))
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "--data", data, "-o", out), out)


def test_nan_inputs(run_cli, digits_checkpoint, tmp_path):
    import numpy as np

    x = np.random.rand(20, 1, 8, 8).astype("float32")
    x[3, 0, 2, 2] = np.nan
    data = tmp_path / "nan.npz"
    np.savez(data, x=x, y=np.zeros(20, "int64"))
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "--data", data, "-o", out), out, contains="nan")


def test_unknown_dataset_suggests(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "--data", "mnsit", "-o", out), out, contains="mnist")


def test_missing_output_directory(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "no" / "such" / "dir" / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "-o", out), contains="does not exist")


def test_unknown_method_is_a_usage_error(run_cli, digits_checkpoint, tmp_path):
    assert_clean_failure(run_cli("fit", digits_checkpoint, "--method", "fancy", "-o", tmp_path / "f.h5"))


def test_not_enough_memory(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    r = run_cli("fit", digits_checkpoint, "--max-memory", "1KiB", "-o", out)
    assert_clean_failure(r, out, contains="--max-memory")


def test_non_finite_weights(run_cli, tmp_path):
    from uncert_cli.checkpoint import ModelMeta, save_model

    model = MLP(64, [16], 10)
    with torch.no_grad():
        model.fc1.weight[0, 0] = float("nan")
    path = tmp_path / "nan.safetensors"
    save_model(model, ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs={"in_features": 64, "hidden": [16],
               "out_features": 10}, input_shape=(1, 8, 8), num_outputs=10, dataset="digits"), path)
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", path, "-o", out), out)


def test_not_a_factor_file(run_cli, digits_checkpoint):
    from uncert_cli.store import read_factor_file
    from uncert_cli.errors import UserError

    with pytest.raises(UserError, match="not an HDF5 file"):
        read_factor_file(digits_checkpoint)


def test_debug_shows_traceback(run_cli, tmp_path):
    r = run_cli("info", tmp_path / "nope.pt", "--debug")
    assert r.code == 2 and "Traceback" in r.err


@pytest.mark.parametrize("option", ["--prior-precision", "--n-data"])
def test_zero_prior_or_n_is_refused_before_fitting(run_cli, digits_checkpoint, tmp_path, option):
    out = tmp_path / "f.h5"
    assert_clean_failure(run_cli("fit", digits_checkpoint, option, "0", "-o", out), out, contains="positive")


def test_factor_file_needs_an_h5_name(run_cli, digits_checkpoint, tmp_path):
    out = tmp_path / "f.txt"
    assert_clean_failure(run_cli("fit", digits_checkpoint, "-o", out), out, contains=".h5")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["report", "ood", "tune", "prune"])
def test_cuda_without_a_gpu_is_a_clean_error(run_cli, digits_checkpoint, tmp_path, command):
    factors = tmp_path / "f.h5"
    assert run_cli("fit", digits_checkpoint, "--limit", "50", "-o", factors, "--quiet").code == 0
    extra = {"ood": ["--limit", "40"], "prune": ["--fraction", "0.5"]}.get(command, [])
    assert_clean_failure(run_cli(command, factors, "--device", "cuda", *extra), contains="no CUDA GPU")
    assert run_cli(command, factors, "--device", "cpu", "--json", *extra).code == 0
