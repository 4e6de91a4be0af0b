"""Running out of memory while a data set is read or its images converted is one line that says how to
hold less: fewer examples (``--limit``) and, for images, a smaller ``--resize``.

The commands run in a child process whose address space is capped (``RLIMIT_AS``) a little above what
it holds once uncert is imported, so the conversion's allocation fails the same way on every machine,
without filling this one's memory.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

CHILD = textwrap.dedent(
    """
    import resource, sys
    from uncert_cli.cli.main import main

    with open("/proc/self/statm") as f:
        in_use = int(f.read().split()[0]) * resource.getpagesize()
    cap = in_use + (3 << 30)  # room for the command itself, not for 512 images of 4096×4096
    resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    sys.exit(main(sys.argv[1:]))
    """
)


def run_capped(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", CHILD, *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("oom")
    rng = np.random.default_rng(0)
    path = folder / "small_images.npz"
    np.savez(path, x=rng.integers(0, 256, (512, 1, 8, 8), dtype=np.uint8), y=rng.integers(0, 10, 512))
    return path


def _assert_advice(r: subprocess.CompletedProcess, spec) -> None:
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "out of memory" in lines[0] and f"'{spec}'" in lines[0], lines[0]
    assert "--limit" in lines[0] and "--resize H,W" in lines[0], lines[0]


def test_fit_out_of_memory_converting_images_suggests_resize(images, digits_checkpoint, tmp_path):
    out = tmp_path / "f.h5"
    r = run_capped("fit", digits_checkpoint, "--data", images, "--resize", "4096,4096", "-o", out, "-q")
    _assert_advice(r, images)
    assert not out.exists()


def test_ood_out_of_memory_converting_images_suggests_resize(images, digits_checkpoint, tmp_path):
    factors = tmp_path / "f.h5"
    fitted = run_capped("fit", digits_checkpoint, "--data", images, "--limit", "64", "-o", factors, "-q")
    assert fitted.returncode == 0, fitted.stderr
    r = run_capped("ood", factors, "--data", images, "--against", images, "--resize", "4096,4096",
                   "--no-tune", "--predictive", "map")
    _assert_advice(r, images)
