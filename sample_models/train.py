"""Train the sample checkpoints that ship with uncert, deterministically.

    python sample_models/train.py [--data-root ../shared/data] [--only digits,toy,mnist-mlp,mnist-mlp-calibrated,lenet,mnist-ensemble]

Every model is saved as safetensors with uncert metadata (architecture, constructor arguments, input
shape, normalisation, task, classes, training set), so ``uncert fit sample_models/X.safetensors`` needs
no other flag. Seeds are fixed and torch runs deterministic kernels, so the same machine reproduces
the same weights. Accuracies are written to ``sample_models/README.md`` by hand from this script's output.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F

from uncert_cli.checkpoint import ModelMeta, save_model
from uncert_cli.data import adapt_to_model, iter_batches, load_dataset
from uncert_cli.models import MLP, LeNet

HERE = Path(__file__).resolve().parent
PACKAGE_SAMPLES = HERE.parent / "src" / "uncert_cli" / "samples"
MNIST_NORMALIZE = ([0.1307], [0.3081])


def evaluate(model: torch.nn.Module, data, task: str) -> dict[str, float]:
    model.eval()
    total, loss, correct = 0, 0.0, 0
    with torch.no_grad():
        for x, y in iter_batches(data, 1000):
            out = model(x)
            if task == "classification":
                loss += F.cross_entropy(out, y, reduction="sum").item()
                correct += (out.argmax(-1) == y).sum().item()
            else:
                loss += F.mse_loss(out, y, reduction="sum").item()
            total += len(x)
    result = {"nll" if task == "classification" else "mse": loss / total}
    if task == "classification":
        result["accuracy"] = correct / total
    return result


def train(model, train_data, *, epochs, lr, weight_decay, batch_size, task="classification",
          optimizer="sgd", seed=0, on_epoch=None) -> None:
    """Plain minibatch training; ``weight_decay`` is the L2 term (it sets the prior of the MAP)."""
    params = list(model.parameters())
    if optimizer == "sgd":
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True)
    else:
        opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    steps = epochs * ((len(train_data) + batch_size - 1) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in iter_batches(train_data, batch_size, shuffle=True, seed=seed + epoch):
            out = model(x)
            loss = F.cross_entropy(out, y) if task == "classification" else F.mse_loss(out, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
        if on_epoch:
            on_epoch(epoch)


def report(name: str, model, test, task="classification", **extra) -> dict:
    metrics = evaluate(model, test, task)
    print(json.dumps({"model": name, **metrics, **extra}))
    return metrics


def train_digits(root) -> None:
    torch.manual_seed(0)
    kwargs = {"in_features": 64, "hidden": [64, 64], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 8, 8),
                     task="classification", num_outputs=10, dataset="digits")
    train_set = adapt_to_model(load_dataset("digits", split="train"), meta.input_shape, num_outputs=10)
    test_set = adapt_to_model(load_dataset("digits", split="test"), meta.input_shape, num_outputs=10)
    model = MLP(**kwargs)
    train(model, train_set, epochs=60, lr=0.05, weight_decay=1e-3, batch_size=64)
    metrics = report("digits_mlp", model.eval(), test_set)
    meta.extra.update({"weight_decay": 1e-3, "test": metrics, "seed": 0})
    for target in (HERE / "digits_mlp.safetensors", PACKAGE_SAMPLES / "digits_mlp.safetensors"):
        save_model(model, meta, target)


def train_toy(root) -> None:
    torch.manual_seed(0)
    kwargs = {"in_features": 1, "hidden": [7, 7], "out_features": 1, "activation": "relu"}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1,), task="regression",
                     num_outputs=1, dataset="toy-regression", noise_std=3.0,
                     normalize_mean=(0.0,), normalize_std=(1.0,))
    train_set = load_dataset("toy-regression", split="train")
    test_set = load_dataset("toy-regression", split="test")
    model = MLP(**kwargs)
    train(model, train_set, epochs=4000, lr=0.01, weight_decay=0.0, batch_size=20, task="regression", optimizer="adam")
    metrics = report("toy_regression_mlp", model.eval(), test_set, task="regression")
    meta.extra.update({"test": metrics, "seed": 0})
    for target in (HERE / "toy_regression_mlp.safetensors", PACKAGE_SAMPLES / "toy_regression_mlp.safetensors"):
        save_model(model, meta, target)  # the package copy is `uncert toy`'s default


def _mnist(root, meta):
    train_set = adapt_to_model(load_dataset("mnist", split="train", root=root), meta.input_shape,
                               normalize=MNIST_NORMALIZE, num_outputs=10)
    test_set = adapt_to_model(load_dataset("mnist", split="test", root=root), meta.input_shape,
                              normalize=MNIST_NORMALIZE, num_outputs=10)
    return train_set, test_set


def train_mnist_mlp(root) -> None:
    """Ritter et al. 2018 §5.2: 784-1024-1024-10, ReLU, dropout 0.5 after each hidden layer."""
    torch.manual_seed(0)
    kwargs = {"in_features": 784, "hidden": [1024, 1024], "out_features": 10, "dropout": 0.5}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 28, 28),
                     normalize_mean=tuple(MNIST_NORMALIZE[0]), normalize_std=tuple(MNIST_NORMALIZE[1]),
                     task="classification", num_outputs=10, dataset="mnist")
    train_set, test_set = _mnist(root, meta)
    model = MLP(**kwargs)
    wd = 5e-4
    train(model, train_set, epochs=12, lr=0.05, weight_decay=wd, batch_size=128)
    metrics = report("mnist_mlp", model.eval(), test_set)
    meta.extra.update({"weight_decay": wd, "test": metrics, "seed": 0})
    save_model(model, meta, HERE / "mnist_mlp.safetensors")


def train_mnist_mlp_calibrated(root) -> None:
    """A second MNIST MLP whose MAP is already well calibrated (issue 13): narrower (784-512-512-10,
    2.7 MB), dropout 0.5, twice the epochs and a stronger weight decay, so that the benchmark has a
    checkpoint where the Laplace posterior must not make the MAP's good calibration worse."""
    torch.manual_seed(0)
    kwargs = {"in_features": 784, "hidden": [512, 512], "out_features": 10, "dropout": 0.5}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 28, 28),
                     normalize_mean=tuple(MNIST_NORMALIZE[0]), normalize_std=tuple(MNIST_NORMALIZE[1]),
                     task="classification", num_outputs=10, dataset="mnist")
    train_set, test_set = _mnist(root, meta)
    model = MLP(**kwargs)
    wd, epochs = 1e-3, 24
    train(model, train_set, epochs=epochs, lr=0.05, weight_decay=wd, batch_size=128)
    metrics = report("mnist_mlp_calibrated", model.eval(), test_set)
    meta.extra.update({"weight_decay": wd, "test": metrics, "seed": 0, "epochs": epochs})
    save_model(model, meta, HERE / "mnist_mlp_calibrated.safetensors")


def train_lenet(root) -> None:
    """LeNet-style CNN; intermediate checkpoints (epochs 1, 2, 4) feed `uncert track`."""
    torch.manual_seed(0)
    kwargs = {"in_channels": 1, "num_classes": 10}
    meta = ModelMeta(arch="uncert_cli.models:LeNet", arch_kwargs=kwargs, input_shape=(1, 28, 28),
                     normalize_mean=tuple(MNIST_NORMALIZE[0]), normalize_std=tuple(MNIST_NORMALIZE[1]),
                     task="classification", num_outputs=10, dataset="mnist")
    train_set, test_set = _mnist(root, meta)
    model = LeNet(**kwargs)
    wd, epochs = 5e-4, 8
    (HERE / "lenet_track").mkdir(exist_ok=True)

    def snapshot(epoch: int) -> None:
        if epoch in (1, 2, 4):
            save_model(model, meta, HERE / "lenet_track" / f"lenet_epoch{epoch}.safetensors")

    train(model, train_set, epochs=epochs, lr=0.05, weight_decay=wd, batch_size=128, on_epoch=snapshot)
    metrics = report("lenet", model.eval(), test_set)
    meta.extra.update({"weight_decay": wd, "test": metrics, "seed": 0, "epochs": epochs})
    save_model(model, meta, HERE / "lenet.safetensors")
    save_model(model, meta, HERE / "lenet_track" / f"lenet_epoch{epochs}.safetensors")


ENSEMBLE_SEEDS = (0, 1, 2, 3, 4)


def train_mnist_ensemble(root) -> None:
    """Five small MNIST MLPs (784-100-10, 318 KB each) that differ only in their seed (initialisation and
    batch order): the members of a deep ensemble and of a mixture of Laplace approximations (issue 14)."""
    kwargs = {"in_features": 784, "hidden": [100], "out_features": 10}
    meta = ModelMeta(arch="uncert_cli.models:MLP", arch_kwargs=kwargs, input_shape=(1, 28, 28),
                     normalize_mean=tuple(MNIST_NORMALIZE[0]), normalize_std=tuple(MNIST_NORMALIZE[1]),
                     task="classification", num_outputs=10, dataset="mnist")
    train_set, test_set = _mnist(root, meta)
    (HERE / "mnist_ensemble").mkdir(exist_ok=True)
    wd, epochs = 5e-4, 5
    for seed in ENSEMBLE_SEEDS:
        torch.manual_seed(seed)
        model = MLP(**kwargs)
        train(model, train_set, epochs=epochs, lr=0.05, weight_decay=wd, batch_size=128, seed=1000 * seed)
        metrics = report(f"mnist_ensemble/mlp_seed{seed}", model.eval(), test_set)
        member = replace(meta, extra={"weight_decay": wd, "test": metrics, "seed": seed, "epochs": epochs})
        save_model(model, member, HERE / "mnist_ensemble" / f"mlp_seed{seed}.safetensors")


JOBS = {"digits": train_digits, "toy": train_toy, "mnist-mlp": train_mnist_mlp,
        "mnist-mlp-calibrated": train_mnist_mlp_calibrated, "lenet": train_lenet,
        "mnist-ensemble": train_mnist_ensemble}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-root", default=None, help="where MNIST lives (default: $UNCERT_DATA)")
    parser.add_argument("--only", default=",".join(JOBS), help="comma-separated subset of " + ", ".join(JOBS))
    args = parser.parse_args()
    torch.use_deterministic_algorithms(True)
    PACKAGE_SAMPLES.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        start = time.perf_counter()
        JOBS[name](args.data_root)
        print(f"# {name}: {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
