"""OOD quality of every documented path (issue 13): uncert's Laplace predictives against laplace-torch.

    python benchmarks/ood.py [--checkpoint CKPT ...] [--factors F.h5 ...] [--limit 2000] [--ood-limit 2000]
                             [--pareto [--png-dir docs/img]] [--mc] [--skip-laplace-torch] [--lt-all] [--speed-n 0]
                             [--json out.json]
    python benchmarks/ood.py --from-json out.json [--png-dir docs/img]     # the tables (and figures) of a run

Default checkpoints: the shipped MNIST MLP (overconfident MAP) and ``mnist_mlp_calibrated`` (a MAP that is
already well calibrated); each gets its KFAC factors from ``uncert fit`` (``CKPT.kfac.h5``, fitted if missing).

* data: MNIST test; the first 1,000 images are the held-out examples that tune (N, τ), the next
  ``--limit`` (0: all 9,000) are evaluated. OOD sets: notMNIST, FashionMNIST, KMNIST (first ``--ood-limit``
  each, 0: all).
* uncert rows, all probit (the default predictive): ``map``; ``fit → ood`` tuned by ``widest`` (the
  default) and by ``val-nll`` (the previous default); ``fit → tune → ood`` with ``tune``'s default
  (widest), ``--objective marglik`` (the previous README flow) and ``marglik --prior-structure layer``.
  ``--mc`` adds the weight-sampling predictive tuned by widest.
* laplace-torch 0.3 (``pip install laplace-torch``, the ``bench`` extra): ``KronLaplace`` on the last layer
  (``--lt-all``: also all weights), fitted on all 60,000 MNIST training images, prior precision by its
  marginal likelihood; predictives ``nn``/MC, ``glm``/probit and ``glm``/MC.
* ``--pareto``: the probit predictive at every (N, τ) of the tuning grid on the evaluation set: the NLL
  against AUROC front that any choice on this grid could reach, with the targets each point meets
  (``_pareto.py``); ``--png-dir`` draws it per checkpoint (``ood_pareto_TAG.png``).
* the JSON records the command, start and end time and the machine's load average (per row too).
* ``--speed-n N``: seconds to predict N test images (uncert mc/glm/probit, laplace-torch nn/mc).

Prints Markdown tables (accuracy, NLL, ECE on MNIST; entropy AUROC per OOD set) and optionally JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _pareto  # noqa: E402
from _common import REPO, data_root  # noqa: E402

from uncert_cli.analysis import metrics as M  # noqa: E402
from uncert_cli.analysis import ood  # noqa: E402
from uncert_cli.workflows.evaluate import AnalysisSettings, load_ood_set  # noqa: E402
from uncert_cli.data import ArrayDataset, iter_batches  # noqa: E402
from uncert_cli.storage.opening import open_posterior  # noqa: E402
from uncert_cli.workflows.inputs import load_model_data  # noqa: E402

OOD_SETS = ("notmnist", "fashionmnist", "kmnist")
Predict = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) -> (B, C) probabilities


def _factors(checkpoint: Path, factors: Path) -> Path:
    if not factors.exists():
        from uncert_cli.cli.main import main

        print(f"# fitting KFAC factors -> {factors}", file=sys.stderr)
        code = main(["fit", str(checkpoint), "-o", str(factors), "--data-root", data_root(), "-q"])
        if code != 0:
            raise SystemExit(f"uncert fit failed with exit code {code}")
    return factors


def _probs(predict: Predict, data: ArrayDataset, batch_size: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([predict(x).double().numpy() for x, _ in iter_batches(data, batch_size)])


def _row(name: str, predict: Predict, evaluation: ArrayDataset, oods: dict[str, ArrayDataset], batch_size: int,
         extra: dict | None = None) -> dict:
    start = time.perf_counter()
    p_in = _probs(predict, evaluation, batch_size)
    p_out = {k: _probs(predict, d, batch_size) for k, d in oods.items()}
    seconds = time.perf_counter() - start
    y = evaluation.targets.numpy()
    row = {
        "method": name,
        "accuracy": M.accuracy(p_in, y),
        "nll": M.nll(p_in, y),
        "ece": M.ece(p_in, y),
        **{f"auroc_{k}": ood.ood_metrics(p_in, p).entropy.auroc for k, p in p_out.items()},
        "seconds": seconds,
        "load_average": os.getloadavg()[0],
        **(extra or {}),
    }
    print(json.dumps(row), file=sys.stderr, flush=True)
    return row


def uncert_rows(factors: Path, evaluation, val, oods, samples: int, batch_size: int, tag: str,
                with_mc: bool) -> list[dict]:
    """Every documented path of issue 13 on one checkpoint, all evaluated on the same examples."""
    from uncert_cli.workflows.tune import tune_factor_file

    opened = open_posterior(factors)
    post = opened.posterior
    gen_seed = 0

    def predictive(p, kind):
        return lambda x: p.predict(x, kind, samples=samples, generator=torch.Generator().manual_seed(gen_seed))

    rows = [_row(f"{tag}: uncert map", lambda x: post.predict(x, "map"), evaluation, oods, batch_size)]
    for objective in ("widest", "val-nll"):
        start = time.perf_counter()
        tuned, hp = ood.tune_on_validation(post, val, "probit", samples=20, batch_size=batch_size, objective=objective)
        label = (f"{tag}: fit → ood, probit {objective}{' (default)' if objective == 'widest' else ''} "
                 f"(τ={hp.prior_precision:g}, N={hp.n_data:g})")
        rows.append(_row(label, predictive(tuned, "probit"), evaluation, oods, batch_size,
                         {"tune_seconds": time.perf_counter() - start, "grid": hp.grid, "val_nll": hp.validation_nll,
                          "map_val_nll": hp.map_validation_nll}))
    # The README's flow: fit → uncert tune → uncert ood (the file's values, eigen prior form as written).
    for objective, structure in (("widest", "scalar"), ("marglik", "scalar"), ("marglik", "layer")):
        outcome = tune_factor_file(factors, objective=objective, structure=structure, write=False,
                                   val_data=val if objective == "widest" else None)
        tuned = outcome.result.apply(post if objective != "widest" else post.with_hyperparameters(prior_mode="factor"))
        tau = outcome.after.prior_precision
        tau_text = f"{tau:.3g}" if isinstance(tau, float) else " / ".join(f"{v:.3g}" for v in tau.values())
        extra = "" if structure == "scalar" else ", --prior-structure layer"
        rows.append(_row(f"{tag}: fit → tune {objective}{extra} → ood, probit (τ={tau_text}, N={outcome.after.n_data:g})",
                         predictive(tuned, "probit"), evaluation, oods, batch_size))
    if with_mc:
        tuned, hp = ood.tune_on_validation(post, val, "mc", samples=20, batch_size=batch_size)
        rows.append(_row(f"{tag}: fit → ood, mc widest (τ={hp.prior_precision:g}, N={hp.n_data:g})",
                         predictive(tuned, "mc"), evaluation, oods, batch_size))
    return rows


def _grid_probs(posts: list, data: ArrayDataset, batch_size: int) -> list[np.ndarray]:
    """Probit probabilities ``(n, C)`` of every posterior in ``posts`` (one posterior under several (N, τ)),
    one Jacobian pass per batch for all of them (``predict_many``)."""
    from uncert_cli.posterior.predictives import predict_many

    parts: list[list[np.ndarray]] = [[] for _ in posts]
    with torch.no_grad():
        for x, _ in iter_batches(data, batch_size):
            for out, p in zip(parts, predict_many(posts, x, "probit", 0, None)):
                out.append(p.double().numpy())
    return [np.concatenate(p) for p in parts]


def pareto_rows(factors: Path, evaluation, val, oods, batch_size: int, tag: str) -> list[dict]:
    """NLL, ECE and entropy AUROC of the probit predictive at every point of the tuning grid on the
    evaluation examples, beside the held-out NLL and entropy that the tuning objectives see: what any
    choice of (N, τ) on this grid could reach, and which of those choices the held-out examples allow."""
    from uncert_cli.posterior.tuning import VAL_N_FACTORS
    from uncert_cli.posterior.widest import WIDEST_TAU_GRID

    post = open_posterior(factors).posterior.with_hyperparameters(prior_mode="factor")
    grid = [(post.n_data * f, tau) for f in VAL_N_FACTORS for tau in WIDEST_TAU_GRID]
    posts = [post.with_hyperparameters(n_data=n, prior_precision=tau) for n, tau in grid]
    start = time.perf_counter()
    p_val = _grid_probs(posts, val, batch_size)
    p_in = _grid_probs(posts, evaluation, batch_size)
    p_out = {k: _grid_probs(posts, d, batch_size) for k, d in oods.items()}
    print(f"# pareto grid of {len(grid)} points: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
    y, y_val = evaluation.targets.numpy(), val.targets.numpy()
    rows = []
    for i, (n, tau) in enumerate(grid):
        row = {
            "method": f"{tag}: grid N={n:g} τ={tau:.3g}",
            "n_data": n,
            "prior_precision": tau,
            "val_nll": M.nll(p_val[i], y_val),
            "val_entropy": float(M.entropy(p_val[i]).mean()),
            "val_ece": M.ece(p_val[i], y_val),
            "accuracy": M.accuracy(p_in[i], y),
            "nll": M.nll(p_in[i], y),
            "ece": M.ece(p_in[i], y),
            **{f"auroc_{k}": ood.ood_metrics(p_in[i], p[i]).entropy.auroc for k, p in p_out.items()},
        }
        print(json.dumps(row), file=sys.stderr, flush=True)
        rows.append(row)
    return rows


def _train_loader(batch_size: int):
    train = load_model_data(_meta(), "mnist", split="train", root=data_root())
    ds = torch.utils.data.TensorDataset(train.inputs, train.targets)
    return torch.utils.data.DataLoader(ds, batch_size=batch_size)


_META = {}
_FITTED = {}  # laplace-torch posteriors by subset, fitted once (all weights: minutes) and reused for speed


def _meta():
    return _META["meta"]


def laplace_torch_rows(model: torch.nn.Module, evaluation, oods, samples: int, batch_size: int, glm_all: bool,
                       lt_all_samples: int, lt_all: bool, tag: str, predictives: set[str]) -> list[dict]:
    from laplace import Laplace

    rows = []
    loader = _train_loader(256)
    for subset in (("all", "last_layer") if lt_all else ("last_layer",)):
        start = time.perf_counter()
        la = Laplace(model, "classification", subset_of_weights=subset, hessian_structure="kron")
        la.fit(loader)
        _FITTED[subset] = la
        la.optimize_prior_precision(pred_type="nn" if subset == "all" else "glm", method="marglik",
                                    prior_structure="scalar")
        fit_s = time.perf_counter() - start
        tau = float(la.prior_precision.reshape(-1)[0])
        label = f"{tag}: laplace-torch kron {subset.replace('_', '-')} (marglik τ={tau:.3g})"
        # All-weights weight sampling redraws 1.9M-parameter samples per batch: fewer samples keep it affordable.
        s_nn = min(samples, lt_all_samples) if subset == "all" else samples
        if "nn/mc" in predictives:
            rows.append(_row(f"{label}, nn/mc (S={s_nn})",
                             lambda x: la(x, pred_type="nn", link_approx="mc", n_samples=s_nn),
                             evaluation, oods, batch_size, {"fit_seconds": fit_s}))
        if subset == "last_layer" or glm_all:
            glm_batch = batch_size if subset == "last_layer" else 16
            if "glm/probit" in predictives:
                rows.append(_row(f"{label}, glm/probit", lambda x: la(x, pred_type="glm", link_approx="probit"),
                                 evaluation, oods, glm_batch, {"fit_seconds": fit_s}))
            if "glm/mc" in predictives:
                rows.append(_row(f"{label}, glm/mc",
                                 lambda x: la(x, pred_type="glm", link_approx="mc", n_samples=samples),
                                 evaluation, oods, glm_batch, {"fit_seconds": fit_s}))
    return rows


def speed_rows(factors: Path, model: torch.nn.Module, n: int, samples: int, batch_size: int, with_lt: bool) -> list[dict]:
    """Seconds to predict ``n`` test images with ``samples`` weight samples."""
    data = load_model_data(_meta(), "mnist", split="test", limit=n, root=data_root())
    post = open_posterior(factors).posterior
    out = []

    def timed(name: str, predict: Predict, sampled: bool = True) -> None:
        start = time.perf_counter()
        _probs(predict, data, batch_size)
        out.append({"method": name, "n": n, "samples": samples if sampled else "— (closed form)",
                    "seconds": time.perf_counter() - start})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)

    gen = torch.Generator().manual_seed(0)
    timed("uncert mc (KFAC, all weights)", lambda x: post.predict(x, "mc", samples=samples, generator=gen))
    timed("uncert glm (KFAC, all weights, logit samples)", lambda x: post.predict(x, "glm", samples=samples, generator=gen))
    timed("uncert probit (KFAC, all weights)", lambda x: post.predict(x, "probit"), sampled=False)
    if with_lt:
        from laplace import Laplace

        la = _FITTED.get("all")
        if la is None:
            la = Laplace(model, "classification", subset_of_weights="all", hessian_structure="kron")
            la.fit(_train_loader(256))
        timed("laplace-torch nn/mc (KFAC, all weights)", lambda x: la(x, pred_type="nn", link_approx="mc", n_samples=samples))
    return out


def _table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c)
            if isinstance(v, float):
                cells.append(f"{v:.2%}" if c == "accuracy" else f"{v:.1f}" if "seconds" in c else f"{v:.4f}")
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(rows: list[dict], pareto: list[dict], speed: list[dict], png_dir: Path | None, run: dict | None = None) -> None:
    """Print the Markdown tables of a run (quality, each checkpoint's grid front, speed); write the fronts' PNGs."""
    if run:
        end_load = run.get("load_average_end", [float("nan")])[0]
        print(f"{run['command']}\n{run['started']} – {run.get('finished', 'unfinished')}, load average "
              f"{run['load_average_start'][0]:.1f} at the start, {end_load:.1f} at the end\n")
    columns = ["method", "accuracy", "nll", "ece", *[f"auroc_{k}" for k in OOD_SETS], "seconds"]
    print(_table(rows, columns))
    for tag in dict.fromkeys(r["method"].split(":")[0] for r in pareto):
        print(f"\n{tag}: the probit predictive at every (N, τ) of the tuning grid\n")
        print(_pareto.pareto_table(rows, pareto, tag))
        if png_dir is not None:
            print(f"\n![{tag}]({_pareto.pareto_png(rows, pareto, tag, png_dir / f'ood_pareto_{tag}.png')})")
    if speed:
        print()
        print(_table(speed, ["method", "n", "samples", "seconds"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, action="append", default=None,
                        help="repeatable; default: the shipped MLP and the calibrated MLP")
    parser.add_argument("--factors", type=Path, action="append", default=None,
                        help="KFAC factor file per --checkpoint, in order (default CKPT.kfac.h5; fitted if missing)")
    parser.add_argument("--limit", type=int, default=2000, help="evaluation images after the 1,000 held out (0: all)")
    parser.add_argument("--ood-limit", type=int, default=2000, help="images per OOD set (0: all)")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--speed-n", type=int, default=0, help="0 skips the speed comparison")
    parser.add_argument("--lt-all-samples", type=int, default=20, help="samples of laplace-torch's all-weights nn/mc")
    parser.add_argument("--skip-laplace-torch", action="store_true")
    parser.add_argument("--lt-predictives", default="nn/mc,glm/probit,glm/mc",
                        help="laplace-torch predictives to evaluate (comma-separated subset of the default)")
    parser.add_argument("--lt-all", action="store_true", help="also laplace-torch on all weights (slow; collapses)")
    parser.add_argument("--lt-glm-all", action="store_true", help="also laplace-torch glm on all weights (slow)")
    parser.add_argument("--mc", action="store_true", help="also uncert's tuned weight-sampling mc row (slow)")
    parser.add_argument("--pareto", action="store_true", help="also every (N, τ) grid point's probit on the evaluation set")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png-dir", type=Path, default=None,
                        help="with --pareto: write the front of each checkpoint as DIR/ood_pareto_TAG.png")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="print the tables (and --png-dir's figures) of an earlier run's --json; computes nothing")
    args = parser.parse_args()
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        report(saved["quality"], saved["pareto"], saved["speed"], args.png_dir, saved.get("run"))
        return
    checkpoints = args.checkpoint or [REPO / "sample_models" / "mnist_mlp.safetensors",
                                      REPO / "sample_models" / "mnist_mlp_calibrated.safetensors"]
    factor_files = args.factors or [c.with_suffix(".kfac.h5") for c in checkpoints]
    if len(factor_files) != len(checkpoints):
        raise SystemExit("give one --factors per --checkpoint (or none)")
    rows, pareto, speed = [], [], []
    # The machine's load is part of the result on a shared machine: recorded at the start, per row and at the end.
    run = {"command": " ".join(sys.argv), "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "load_average_start": os.getloadavg()}
    for checkpoint, factor_file in zip(checkpoints, factor_files):
        torch.manual_seed(0)
        if not checkpoint.exists():
            raise SystemExit(f"no checkpoint at {checkpoint}; train it with sample_models/train.py")
        factors = _factors(checkpoint, factor_file)
        opened = open_posterior(factors)
        _META["meta"] = opened.model.meta
        model = opened.model.module
        tag = checkpoint.stem
        test = load_model_data(_META["meta"], "mnist", split="test", limit=1000 + args.limit if args.limit else None,
                               root=data_root())
        val, evaluation = ood.split_validation(test, 1000)
        ood_settings = AnalysisSettings(limit=args.ood_limit or None, root=Path(data_root()))
        oods = {k: load_ood_set(_META["meta"], k, ood_settings) for k in OOD_SETS}
        rows += uncert_rows(factors, evaluation, val, oods, args.samples, args.batch_size, tag, args.mc)
        if not args.skip_laplace_torch:
            rows += laplace_torch_rows(model, evaluation, oods, args.samples, args.batch_size, args.lt_glm_all,
                                       args.lt_all_samples, args.lt_all, tag, set(args.lt_predictives.split(",")))
        if args.pareto:
            pareto += pareto_rows(factors, evaluation, val, oods, args.batch_size, tag)
        if args.speed_n:
            speed += speed_rows(factors, model, args.speed_n, args.samples, args.batch_size, not args.skip_laplace_torch)
        if args.json:  # after each checkpoint, so that a long run's finished part is kept
            args.json.write_text(json.dumps({"run": run, "quality": rows, "pareto": pareto, "speed": speed}, indent=2))
    print(f"MNIST test images 1000..{1000 + len(evaluation) - 1} evaluated (first 1,000 tune uncert's N, τ); "
          f"{', '.join(f'{k} {len(v):,}' for k, v in oods.items())} OOD images; {args.samples} samples for sampled "
          "predictives.\n")
    report(rows, pareto, speed, args.png_dir)
    if args.json:
        run |= {"finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "load_average_end": os.getloadavg()}
        args.json.write_text(json.dumps({"run": run, "quality": rows, "pareto": pareto, "speed": speed}, indent=2))


if __name__ == "__main__":
    main()
