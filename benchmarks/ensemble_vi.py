"""MAP, Laplace (kfac, diag), VI, deep ensemble and mixture of Laplace on MNIST (issue 14), through the CLI.

    UNCERT_DATA=../shared/data python benchmarks/ensemble_vi.py [--work DIR] [--epochs 5] [--json out.json]

Checkpoints: the five seeds of ``sample_models/mnist_ensemble`` (784-100-10 MLPs, ``sample_models/train.py
--only mnist-ensemble``). Member 1 (seed 0) gives the single-model rows; all five the ensemble and the
mixture. Every number comes from one run of the real commands (``uncert fit``, ``uncert ood --json``,
``uncert compare --json``) on all 60,000 MNIST training images:

* fits: ``kfac`` of every member, ``diag`` and ``vi`` (``--epochs``, default 5) of member 1, each timed
  (wall clock of the command, which includes loading MNIST);
* ``ood`` against notMNIST, FashionMNIST and KMNIST on the full test sets: MNIST test with its first 1,000
  images held out to tune (N, τ) of each Laplace predictive (``widest``), the other 9,000 evaluated.
  Rows: MAP; probit on the kfac and the diag file (tuned); VI as fitted (``mc``, 100 samples, ``--no-tune``:
  the variational predictive itself, evaluated on all 10,000 test images since nothing is tuned) and its
  mean as a MAP; the deep ensemble of five MAPs; the mixture of the five tuned kfac probit predictives;
* ``compare`` of the diag, kfac and vi files of member 1: do VI and Laplace rank the layers alike?

Prints Markdown tables for docs/benchmarks.md and optionally writes everything as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, data_root  # noqa: E402

from uncert_cli.cli.main import main  # noqa: E402

OOD_SETS = ("notmnist", "fashionmnist", "kmnist")
MEMBERS = [REPO / "sample_models" / "mnist_ensemble" / f"mlp_seed{s}.safetensors" for s in range(5)]


def run(*args: object) -> tuple[object, float]:
    """``uncert ARGS --json``: the parsed document and the command's wall-clock seconds."""
    out = io.StringIO()
    start = time.perf_counter()
    reads_data = args[0] in ("fit", "ood")
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in args] + ["--json", "--quiet"] + (["--data-root", data_root()] if reads_data else []))
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"uncert {' '.join(map(str, args))} failed with exit code {code}")
    return json.loads(out.getvalue()), seconds


def ood_rows(doc: dict, names: dict[str, str], seconds: float) -> list[dict]:
    """One row per predictive of an ``ood --json`` document, renamed by ``names`` (kind -> row label)."""
    rows = []
    for kind, label in names.items():
        ind = doc["in_distribution"][kind]
        rows.append({"method": label, "accuracy": ind["accuracy"], "nll": ind["nll"], "ece": ind["ece"],
                     **{f"auroc_{s}": doc["ood"][s][kind]["auroc_entropy"] for s in OOD_SETS},
                     "command_seconds": seconds})
    return rows


def markdown(rows: list[dict]) -> str:
    head = "| method | accuracy | NLL | ECE | AUROC notMNIST | AUROC FashionMNIST | AUROC KMNIST |\n|---|---|---|---|---|---|---|"
    lines = [f"| {r['method']} | {r['accuracy']:.2%} | {r['nll']:.4f} | {r['ece']:.4f} | "
             + " | ".join(f"{r[f'auroc_{s}']:.3f}" for s in OOD_SETS) + " |" for r in rows]
    return "\n".join([head, *lines])


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", type=Path, default=None, help="folder for the factor files (default: a temporary one)")
    parser.add_argument("--epochs", type=int, default=5, help="VI epochs")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    missing = [m for m in MEMBERS if not m.exists()]
    if missing:
        raise SystemExit(f"missing {missing[0]}: run python sample_models/train.py --only mnist-ensemble")
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        fits: dict[str, float] = {}
        kfac = []
        for i, member in enumerate(MEMBERS, 1):
            out = work / f"kfac_{i}.h5"
            _, fits[f"kfac member {i}"] = run("fit", member, "--data", "mnist", "--method", "kfac", "-o", out)
            kfac.append(out)
        diag, vi = work / "diag_1.h5", work / "vi_1.h5"
        _, fits["diag member 1"] = run("fit", MEMBERS[0], "--data", "mnist", "--method", "diag", "-o", diag)
        vi_doc, fits["vi member 1"] = run("fit", MEMBERS[0], "--data", "mnist", "--method", "vi", "--epochs",
                                          args.epochs, "-o", vi)
        against = [a for s in OOD_SETS for a in ("--against", s)]
        rows = []
        doc, sec = run("ood", kfac[0], *against, "--predictive", "map,probit")
        rows += ood_rows(doc, {"map": "MAP (member 1)", "probit": "Laplace kfac, probit (tuned)"}, sec)
        doc, sec = run("ood", diag, *against, "--predictive", "probit")
        rows += ood_rows(doc, {"probit": "Laplace diag, probit (tuned)"}, sec)
        doc, sec = run("ood", vi, *against, "--predictive", "map,mc", "--no-tune")
        rows += ood_rows(doc, {"mc": "VI, sampled (as fitted)", "map": "VI mean"}, sec)
        doc, sec = run("ood", *kfac, *against, "--predictive", "map,probit")
        rows += ood_rows(doc, {"ensemble": "deep ensemble of 5", "mixture-probit": "mixture of 5 Laplace (kfac, probit)"}, sec)
        compared, _ = run("compare", diag, kfac[0], vi)
    result = {"fits_seconds": fits, "vi": vi_doc["vi"], "rows": rows, "compare": compared}
    print(markdown(rows))
    print("\n| fit | seconds |\n|---|---|\n" + "\n".join(f"| {k} | {v:.1f} |" for k, v in fits.items()))
    print(f"\nVI ELBO per epoch: {[round(e, 1) for e in vi_doc['vi']['elbo']]}")
    print("\n| layer | diag share | kfac share | vi share | ρ(σ) diag–kfac | ρ(σ) diag–vi | KL(diag‖vi)/weight |")
    print("|---|---|---|---|---|---|---|")
    for layer in compared["layers"]:
        f, p = layer["files"], layer["versus_first"]
        print(f"| {layer['name']} | {f[0]['variance_share']:.1%} | {f[1]['variance_share']:.1%} | {f[2]['variance_share']:.1%} | "
              f"{p[0]['std_spearman']:.3f} | {p[1]['std_spearman']:.3f} | {p[1]['kl_per_weight']:.3g} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main_()
