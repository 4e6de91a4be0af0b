"""A finite but huge N or τ whose posterior precision N·λ + τ overflows float32 is refused.

Found as a stranger: ``report --n-data 1e300`` printed a table of zeros and NaN with exit code 0, and
``attack``/``ood`` stopped with an internal error (``atol ... got -nan``). Each option passes the check
that numbers are finite; only their product with the curvature is not.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def factor_file(digits_checkpoint, tmp_path_factory):
    from uncert_cli.cli.main import main

    out = tmp_path_factory.mktemp("factors") / "kfac.h5"
    assert main(["fit", str(digits_checkpoint), "--data", "digits", "--limit", "64", "-o", str(out), "--quiet"]) == 0
    return out


@pytest.mark.parametrize("command", [
    ["report", "{f}", "--json"],
    ["ood", "{f}", "--against", "photo-patches", "--limit", "8", "--no-tune", "--json"],
    ["attack", "{f}", "--limit", "8", "--no-tune", "--json"],
])
@pytest.mark.parametrize("option", ["--n-data", "--prior-precision"])
def test_a_precision_beyond_float32_is_one_line_naming_the_options(run_cli, factor_file, command, option):
    code, out, err = run_cli(*[str(factor_file) if a == "{f}" else a for a in command], option, "1e300")
    assert code == 2, err
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert "overflows" in err and "--n-data" in err and "--prior-precision" in err, err


def test_large_values_that_fit_still_work(run_cli, factor_file):
    code, out, err = run_cli("report", factor_file, "--n-data", "1e20", "--json")
    assert code == 0, err
