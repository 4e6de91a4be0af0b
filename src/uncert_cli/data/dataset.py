"""The one in-memory dataset type every other part of uncert consumes.

Storage convention (why: MNIST-train is 47 MB as uint8 but 188 MB as float32, CIFAR-100-train
150 MB vs 600 MB, and most commands stream the data once):

* ``inputs`` is either **float32** (values used as they are) or **uint8** (raw pixels; the value
  an example *means* is ``pixel / 255``, i.e. float32 in ``[0, 1]``). Loaders keep images as uint8;
  :meth:`ArrayDataset.__getitem__`, :func:`uncert_cli.data.iter_batches`, :meth:`float_inputs` and
  :func:`uncert_cli.data.adapt_to_model` convert to float32 on the way out, so consumers always see
  float32. Images are channel-first: ``(N, C, H, W)``.
* ``inputs`` may also be **int64**: token ids for models that start with an embedding. They are
  never converted (an id is not a number to scale) and reach the model as int64.
* Token data with several arrays per example (``input_ids``, ``attention_mask``, ``token_type_ids``)
  is **packed**: ``inputs`` is ``(N, k, T)`` int64 and ``input_names`` names the k rows, in order; the
  model receives them as keyword arguments (:mod:`uncert_cli.checkpoint.keyword_inputs`). Slicing
  examples (batches, ``take``) keeps the packing, so every consumer still sees one tensor.
* ``targets`` is ``(N,)`` int64 class indices for classification, ``(N, D)`` float32 for regression.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from uncert_cli.core.vocabulary import Task

TASKS: tuple[str, ...] = Task.choices()


def is_token_ids(inputs: torch.Tensor) -> bool:
    """True for integer inputs that are token ids (int64), which are fed to the model unconverted."""
    return inputs.dtype == torch.int64


def to_float(inputs: torch.Tensor) -> torch.Tensor:
    """The model's view of stored inputs: uint8 pixels become float32 ``pixel / 255``; float32 is
    returned as is (no copy); int64 token ids pass through unchanged.
    """
    if is_token_ids(inputs):
        return inputs
    if inputs.dtype == torch.uint8:
        return inputs.to(torch.float32).div_(255.0)
    if inputs.dtype != torch.float32:
        return inputs.to(torch.float32)
    return inputs


@dataclass(eq=False)  # eq=False: comparing datasets tensor by tensor is never what anyone means
class ArrayDataset(torch.utils.data.Dataset):
    """A whole dataset held as two tensors.

    Attributes:
        name: the spec it came from, e.g. ``"mnist"``, ``"digits"``, ``"x.npz"``.
        inputs: ``(N, *sample_shape)``, float32 or uint8 (= pixel/255, see the module docstring).
        targets: ``(N,)`` int64 (classification) or ``(N, D)`` float32 (regression).
        task: ``"classification"`` or ``"regression"``.
        num_classes: number of classes for classification, else ``None``.
        class_names: one name per class for classification (may be ``None``), else ``None``.
        split: the split these examples are (``None``: a whole file that has no splits).
        input_names: for packed token data, the keyword each row of an example's ``(k, T)`` inputs is
            fed to the model as (e.g. ``("input_ids", "attention_mask")``); ``None`` for one input.
    """

    name: str
    inputs: torch.Tensor
    targets: torch.Tensor
    task: str
    num_classes: int | None = None
    class_names: list[str] | None = None
    # Which examples of ``name`` these are: "train", "val", "test", or None for a file without splits.
    split: str | None = None
    input_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        # These are programming errors of a loader, not user errors: fail loudly with ValueError.
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.inputs.dtype not in (torch.uint8, torch.float32, torch.int64):
            raise ValueError(f"inputs must be uint8, float32 or int64 (token ids), got {self.inputs.dtype}")
        if self.inputs.ndim < 2:
            raise ValueError(f"inputs must be (N, *sample_shape) with a sample shape, got {tuple(self.inputs.shape)}")
        if self.input_names is not None and not (
            self.inputs.dtype == torch.int64 and self.inputs.ndim == 3 and self.inputs.shape[1] == len(self.input_names)
        ):
            raise ValueError(f"packed token inputs must be (N, {len(self.input_names)}, T) int64, got "
                             f"{self.inputs.dtype} {tuple(self.inputs.shape)}")
        if self.inputs.shape[0] != self.targets.shape[0]:
            raise ValueError(f"{self.inputs.shape[0]} inputs but {self.targets.shape[0]} targets")
        if self.task == "classification":
            if self.targets.dtype != torch.int64 or self.targets.ndim != 1:
                got = f"{self.targets.dtype} {tuple(self.targets.shape)}"
                raise ValueError(f"classification targets must be (N,) int64, got {got}")
            if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
                raise ValueError(f"{len(self.class_names)} class names for {self.num_classes} classes")
        else:
            if self.targets.dtype != torch.float32 or self.targets.ndim != 2:
                got = f"{self.targets.dtype} {tuple(self.targets.shape)}"
                raise ValueError(f"regression targets must be (N, D) float32, got {got}")
            if self.num_classes is not None or self.class_names is not None:
                raise ValueError("regression datasets have no classes")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One example: ``(x, y)`` with ``x`` float32 of ``sample_shape`` and ``y`` a scalar int64 or ``(D,)`` float32."""
        return to_float(self.inputs[index]), self.targets[index]

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one input, e.g. ``(1, 28, 28)`` for MNIST or ``(4,)`` for iris."""
        return tuple(int(d) for d in self.inputs.shape[1:])

    @property
    def output_dim(self) -> int:
        """Classes (classification) or target dimension D (regression)."""
        if self.task == "classification":
            return int(self.num_classes) if self.num_classes is not None else int(self.targets.max()) + 1
        return int(self.targets.shape[1])

    def float_inputs(self) -> torch.Tensor:
        """All inputs as float32 ``(N, *sample_shape)`` (a copy when stored as uint8)."""
        return to_float(self.inputs)

    def take(self, count: int | None) -> ArrayDataset:
        """The first ``count`` examples (all of them when ``count`` is None or larger than the dataset)."""
        if count is None or count >= len(self):
            return self
        return replace(self, inputs=self.inputs[:count], targets=self.targets[:count])

    def __repr__(self) -> str:
        classes = f", num_classes={self.num_classes}" if self.task == "classification" else ""
        return (
            f"ArrayDataset(name={self.name!r}, n={len(self)}, sample_shape={self.sample_shape}, "
            f"inputs={str(self.inputs.dtype).removeprefix('torch.')}, task={self.task!r}{classes})"
        )


def inputs_to(x: torch.Tensor, device: torch.device | str, dtype: torch.dtype) -> torch.Tensor:
    """A batch on ``device`` in the model's ``dtype``; token ids (int64) keep their integer type."""
    return x.to(device) if is_token_ids(x) else x.to(device, dtype)
