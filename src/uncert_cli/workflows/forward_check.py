"""Does the model run on this data? One plain forward on the first examples, before the real work.

A model that cannot take the user's data (3-channel convolutions given grey MNIST, a 64-input MLP
given 3×32×32 images) fails deep inside the fit or an evaluation with the model's own message, which
would read as uncert's bug. Every command that runs the model on data calls :func:`check_model_runs`
once on the data it loaded, so that failure is a user error that quotes the model, states the data's
example shape and says what to try. Only the model's own forward is inside the check: whatever fails
later, in uncert's code, stays an internal error.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Collection

import torch
from torch import nn

from uncert_cli.checkpoint.keyword_inputs import feed_keyword_inputs
from uncert_cli.core.errors import ModelWarning, UserError
from uncert_cli.core.model_state import model_state
from uncert_cli.data import ArrayDataset
from uncert_cli.data.dataset import inputs_to, is_token_ids

# Two examples, not one: some models (batch statistics, squeezes of the batch axis) fail on a single
# example only, which would blame the data for something every real batch avoids.
CHECK_EXAMPLES = 2
MESSAGE_CHARS = 180  # the model's message is quoted up to this many characters


def check_model_runs(
    model: nn.Module, data: ArrayDataset, *, offers: Collection[str] = ("channels", "resize"),
    num_outputs: int | None = None,
) -> None:
    """Run ``model`` (eval mode, no gradients) on the first examples of ``data``; refuse what it cannot run.

    Args:
        model: the network, on the device and in the dtype the command uses.
        data: inputs as the model will get them, ``(N, *input_shape)`` float32 or int64 token ids.
        offers: the library parameters the caller has for fixing the data (``channels``, ``resize``,
            ``input_shape``); the message suggests only these.
        num_outputs: the output width the model's metadata records (``ModelMeta.num_outputs``), checked
            against the width of the forward's result (its last axis, ``(B, C)`` → ``C``); None: unchecked.

    Raises:
        MemoryError: the forward ran out of host memory (re-raised as is).
        OutOfMemoryError: the forward ran out of accelerator memory (re-raised as is).
        UserError: the model's forward raised; the message quotes it (shortened), gives the example shape
            (and dtype for token ids) and what to try. Or the model's output width is not the recorded one.
    """
    if len(data) == 0:
        return  # adapt_to_model refuses empty sets with its own message
    feed_keyword_inputs(model, data.input_names, data.name)  # packed token arrays reach it as keywords
    x = data.inputs[:CHECK_EXAMPLES]
    parameter = next((p for p in model.parameters() if p.is_floating_point()), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None else torch.float32
    x = inputs_to(x, device, dtype)
    try:
        with model_state(model), torch.no_grad():
            output = model(x)
        with model_state(model), torch.no_grad():
            again = model(x)
    except (MemoryError, torch.OutOfMemoryError):
        raise  # the sizes the user chose, said as such by the CLI
    except UserError:
        raise  # uncert's own word on the model's result (e.g. no tensor to analyse in it), already one line
    except Exception as exc:  # noqa: BLE001 - whatever the model's own code raises on this data
        refusal = _refusal(model, data, exc, offers)
        raise refusal from None
    _check_output_width(output, num_outputs)
    _warn_if_random(output, again)


def _warn_if_random(output: object, again: object) -> None:
    """Warn (:class:`ModelWarning`) when two eval-mode runs on the same examples disagree.

    A random operation that ignores eval mode (``F.dropout(x, training=True)``, noise drawn in ``forward``)
    makes the fit's curvature, the MAP accuracy and every predictive one random draw per batch, with
    nothing in the numbers to show it. Buffers are put back between the runs (:func:`model_state`), so a
    model that only updates its own state does not count as random.
    """
    if not (isinstance(output, torch.Tensor) and isinstance(again, torch.Tensor)) or output.shape != again.shape:
        return
    if not output.is_floating_point() or torch.allclose(output, again, rtol=1e-4, atol=1e-6, equal_nan=True):
        return
    warnings.warn(
        "the model gives other outputs for the same examples on a second run in eval mode: a random operation "
        "ignores eval mode (e.g. F.dropout(x, training=True), noise drawn in forward), so the curvature, the MAP "
        "accuracy and every predictive are of one random draw per batch; make the randomness depend on "
        "self.training", ModelWarning, stacklevel=3)


def _check_output_width(output: object, num_outputs: int | None) -> None:
    """Refuse metadata whose ``num_outputs`` is not the width the model computes (``output``: ``(B, C)`` or ``(B,)``).

    The labels are checked against the recorded width, so a wrong record would otherwise read as data of
    the wrong kind, or, with a larger record, pass and be written into the factor file.

    Raises:
        UserError: the model's output width is not ``num_outputs``.
    """
    if num_outputs is None or not isinstance(output, torch.Tensor) or output.ndim == 0:
        return
    # Trailing unit dimensions are dropped, so (B, C, 1) is C outputs wide as the predictives' flattening reads it
    dims = [int(d) for d in output.shape[1:]]
    while len(dims) > 1 and dims[-1] == 1:
        dims.pop()
    width = dims[-1] if dims else 1
    if width != num_outputs:
        raise UserError(
            f"the checkpoint's metadata and the model disagree: the metadata records num_outputs {num_outputs} but "
            f"the model computes {width} output{'s' if width != 1 else ''} per example (result shape "
            f"{tuple(output.shape[1:])}); save the checkpoint again with num_outputs {width} in its metadata, or "
            "load it with the class and arguments it was trained with"
        )


def _refusal(model: nn.Module, data: ArrayDataset, exc: Exception, offers: Collection[str]) -> UserError:
    shape = str(tuple(int(d) for d in data.sample_shape))
    kind = " (int64 token ids)" if is_token_ids(data.inputs) else ""
    said = " ".join(str(exc).split()) or "(no message)"
    if len(said) > MESSAGE_CHARS:
        said = said[: MESSAGE_CHARS - 1] + "…"
    advice, mentions = _advice(model, data, offers)
    return UserError(
        f"the model cannot run on the examples of '{data.name}', shape {shape}{kind}: its forward raised "
        f"{type(exc).__name__}: {said}; {advice}",
        mentions=mentions,
    )


def _first_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The first module (registration order) that holds parameters of its own, usually the input layer."""
    for name, module in model.named_modules():
        if next(module.parameters(recurse=False), None) is not None:
            return name, module
    return None


def _advice(model: nn.Module, data: ArrayDataset, offers: Collection[str]) -> tuple[str, tuple[str, ...]]:
    """What to try, as text with ``{channels}``-style placeholders, and the parameters it mentions.

    Where the first layer says what it takes (a conv's channels, a Linear's features that make a
    square image), the exact conversion; otherwise the general ways out.

    Returns:
        ``(advice, mentioned parameters)``.
    """
    sample = tuple(int(d) for d in data.sample_shape)
    image = sample if len(sample) == 3 and sample[0] in (1, 3) and not is_token_ids(data.inputs) else None
    first = _first_layer(model)
    exact: list[str] = []
    if first is not None and image is not None and {"channels", "resize"} <= set(offers):
        name, layer = first
        if isinstance(layer, nn.Conv2d) and layer.in_channels != image[0] and layer.in_channels in (1, 3):
            exact = [f"its first layer {name} takes {layer.in_channels} channels: convert the images with "
                     f"{{channels}} {layer.in_channels}"]
        elif isinstance(layer, nn.Linear) and layer.in_features != math.prod(image):
            for channels in dict.fromkeys((image[0], 1, 3)):
                side = math.isqrt(layer.in_features // channels)
                if side > 1 and channels * side * side == layer.in_features:
                    steps = ([f"{{channels}} {channels}"] if channels != image[0] else []) + [f"{{resize}} {side},{side}"]
                    exact = [f"its first layer {name} takes {layer.in_features} features: convert the images with "
                             + " ".join(steps)]
                    break
    if first is not None and isinstance(first[1], nn.Embedding) and is_token_ids(data.inputs):
        highest = int(data.inputs.max())
        if highest >= first[1].num_embeddings:
            exact = [f"its first layer {first[0]} knows {first[1].num_embeddings} token ids (0..{first[1].num_embeddings - 1}) "
                     f"but the data holds ids up to {highest}: encode the tokens with the model's vocabulary"]
    general = []
    if not exact and image is not None and {"channels", "resize"} & set(offers):
        general.append("convert the images to the model's channels and size ("
                       + " / ".join(f"{{{p}}}" for p in ("channels", "resize") if p in offers) + ")")
    if "input_shape" in offers:
        general.append("give the model's input shape with {input_shape}")
    general.append("use the dataset the model was trained on")
    mentions = tuple(p for p in ("channels", "resize", "input_shape") if p in offers)
    return "; ".join(exact) + ("; or " if exact else "") + ", or ".join(general), mentions
