"""Options shared by several subcommands, declared once so every command spells them the same."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from uncert_cli.core.errors import UserError
from uncert_cli.core.vocabulary import HeldOutObjective
from uncert_cli.data import ImageConversion, parse_size
from uncert_cli.data.file_splits import split_was_given


class DeviceChoice(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class SplitChoice(str, Enum):
    train = "train"
    test = "test"
    val = "val"


def positive(value: float | None) -> float | None:
    """Option callback: precisions and data sizes must be > 0 (0 would make the posterior improper)."""
    if value is not None and not value > 0:
        raise typer.BadParameter(f"must be a positive number, got {value}")
    return value


Json = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout (tables and progress go away).")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or log lines.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")]
Device = Annotated[DeviceChoice, typer.Option("--device", help="Where to compute.")]
DataSpec = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="Dataset spec: a name (mnist, fashionmnist, kmnist, notmnist, emnist-letters, cifar10, cifar100, "
        "svhn, digits, iris, toy-regression) or a file (x.npz, x.h5:images,labels, a class-folder, x.pt).",
    ),
]
Split = Annotated[
    SplitChoice | None,
    typer.Option(
        "--split",
        help="Which split (default: the command's). A data file gives it when it holds splits (x_train/x_test "
        "arrays, train/ test/ folders); a file without splits is used whole, and --split on it is an error.",
    ),
]


def split_choice(split: SplitChoice | None, default: str) -> tuple[str, str | None]:
    """``(split to load, who asked for it)``: ``None`` as the second item when ``--split`` was not
    given, so that a data file without splits is used whole rather than refused. The second item names
    the parameter (``{param}``); the CLI shows it as ``--split`` when it renders the refusal.
    """
    if split is None:
        return default, None
    return split.value, split_was_given(split.value)

Limit = Annotated[int | None, typer.Option("--limit", min=1, help="Use only the first N examples.")]
BatchSize = Annotated[int, typer.Option("--batch-size", min=1, help="Examples per batch.")]
DataRoot = Annotated[
    Path | None, typer.Option("--data-root", help="Where named datasets live (default: $UNCERT_DATA, then ~/.cache/uncert/data).")
]
Download = Annotated[bool, typer.Option("--download", help="Download missing named datasets (checksummed).")]
Normalize = Annotated[
    str | None, typer.Option("--normalize", help="Input normalisation MEAN,STD (overrides the checkpoint's).")
]
Arch = Annotated[
    str | None,
    typer.Option("--arch", help=(
        "Architecture for weight-only checkpoints: package.module:Class, file.py:Class or torchvision:NAME."
    )),
]
ArchKwargs = Annotated[
    list[str] | None, typer.Option("--arch-kwargs", help="Constructor arguments key=value (repeatable).")
]
# The same flags on the commands that open a factor file and run its network: naming the class is the
# consent to import it (a file alone never makes uncert import code); it must match the stored weights.
FactorArch = Annotated[
    str | None,
    typer.Option(
        "--arch",
        help="The network's class when the factor file was fitted on your own (file.py:Class or package.module:Class): "
        "naming it lets uncert import it; it must reproduce the stored weights.",
    ),
]
FactorArchKwargs = Annotated[
    list[str] | None,
    typer.Option("--arch-kwargs", help=(
        "Constructor arguments key=value for --arch (repeatable); when --arch names the class the file records, they update "
        "the keyword arguments recorded at fit."
    )),
]
# Checkpoints written by training frameworks (issue 15): where the state dict sits, which part of the result counts.
StateKey = Annotated[
    str | None,
    typer.Option("--state-key", metavar="KEY", help="The key of a torch.save'd dict that holds the network's state dict "
                 "(e.g. state_dict, ema_state_dict; a.b for a nested one). Default: the first of state_dict, "
                 "model_state_dict, model, net, ... that holds one."),
]
StripPrefix = Annotated[
    str | None,
    typer.Option("--strip-prefix", metavar="PREFIX", help="Take the state-dict entries whose keys start with PREFIX (e.g. "
                 "model. for a Lightning .ckpt), with PREFIX removed, and leave the others out. Default: found "
                 "when exactly one prefix makes the entries fit the architecture."),
]
# Not --output: fit and prune already spell their output file -o/--output.
ModelOutput = Annotated[
    str | None,
    typer.Option("--model-output", metavar="NAME|INDEX", help="For a network whose forward returns a dict, tuple, "
                 "namedtuple or dataclass (Hugging Face ModelOutput): the entry to analyse, by name (logits) or index "
                 "(0). Default: logits when present, else the first tensor. Recorded in the factor file."),
]
TrustRemoteCode = Annotated[
    bool,
    typer.Option("--trust-remote-code", help="Let a Hugging Face model folder whose config names its own code (auto_map) "
                 "run that code. Only for folders you trust."),
]
TrustPickle = Annotated[
    bool,
    typer.Option("--trust-pickle", help="Allow loading a fully pickled model. Pickles run code: only for files you trust."),
]
PriorPrecision = Annotated[
    float | None, typer.Option("--prior-precision", callback=positive, help=(
        "Prior precision τ (default: the file's, possibly tuned)."
    ))
]
NData = Annotated[float | None, typer.Option("--n-data", callback=positive, help="Dataset size N scaling the curvature.")]
Resize = Annotated[
    str | None,
    typer.Option(
        "--resize", metavar="H,W",
        help="Resize the images to H,W (bilinear, antialiased), e.g. 32,32. Given to fit, it is recorded and later "
        "commands resize their data alike (ood: the --against sets too).",
    ),
]
Grayscale = Annotated[
    bool,
    typer.Option(
        "--grayscale",
        help="Turn RGB images into one gray channel (luma 0.299 R + 0.587 G + 0.114 B); same as --channels 1. "
        "Given to fit, it is recorded and later commands convert their data alike (ood: the --against sets too).",
    ),
]
Channels = Annotated[
    int | None,
    typer.Option(
        "--channels", metavar="1|3",
        help="Convert the images to 1 channel (luma of RGB) or 3 (the gray channel repeated), e.g. --channels 3 for "
        "an RGB model on MNIST. Given to fit, it is recorded and later commands convert their data alike.",
    ),
]


def image_conversion(grayscale: bool, channels: int | None, resize: str | None) -> ImageConversion:
    """The conversion asked for on the command line (fields not given stay None: the fit's record decides)."""
    if grayscale and channels not in (None, 1):
        raise UserError(f"--grayscale means one channel but --channels {channels} was given; pass only one of them")
    return ImageConversion(channels=1 if grayscale else channels, size=parse_size(resize))


# Options shared by the commands that evaluate predictives (ood, attack).
Tune = Annotated[
    bool | None,
    typer.Option(
        "--tune/--no-tune",
        help="Tune N and τ per Laplace predictive by validation NLL on the first --val-size in-distribution test "
        "examples (evaluation uses the rest). Default: tune unless --prior-precision/--n-data is given or the file "
        "was tuned with `uncert tune`.",
    ),
]
ValSize = Annotated[int, typer.Option("--val-size", min=1, help="Held-out examples for tuning (at most half the test set).")]
TuneSamples = Annotated[int, typer.Option("--tune-samples", min=1, help="Weight samples per prediction while tuning.")]
AnalysisPriorMode = Annotated[
    str | None,
    typer.Option("--prior-mode", help=(
        "eigen (exact N·λ+τ) or factor (Ritter eq. 9). Default: factor when tuning, else the file's."
    )),
]
Seed = Annotated[int, typer.Option("--seed", help="Seed of the weight samples and dropout masks.")]
Png = Annotated[Path | None, typer.Option("--png", help="Write plots (PNG) into this folder.")]

# Held-out tuning (issue 13), shared by tune, ood and attack.
HeldOutObjectiveOption = Annotated[
    HeldOutObjective,
    typer.Option("--objective", help="How --tune chooses N and τ: widest (the widest posterior whose held-out NLL is "
                 "within --nll-tolerance of the best) or val-nll (the lowest held-out NLL)."),
]
NllTolerance = Annotated[
    float,
    typer.Option(
        "--nll-tolerance", min=0.0,
        help="widest objective: how much higher (relative) the held-out NLL of a wider posterior may be than the "
        "best one's, or the MAP's if lower (0.01 = 1%).",
    ),
]
ValFrom = Annotated[
    str | None,
    typer.Option(
        "--val-from",
        help="Held-out examples that tune or check N and τ: val (the set's val split; default where it exists), "
        "test (the first --val-size test examples; default otherwise) or train (the last 5,000 training "
        "examples, which the checkpoint has probably seen).",
    ),
]
