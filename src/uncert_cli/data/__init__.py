"""The dataset layer: load built-in datasets and user files into one in-memory type, adapt, batch.

Typical use::

    from uncert_cli.data import load_dataset, adapt_to_model, iter_batches, parse_normalize

    ds = load_dataset("mnist", split="test", root=args.data_root, limit=1000)
    ds = adapt_to_model(ds, (784,), normalize=parse_normalize("0.1307,0.3081"), num_outputs=10,
                        task="classification")
    for x, y in iter_batches(ds, 256, shard=(rank, world_size)):
        ...

Loaded images are stored as uint8 ``(N, C, H, W)`` meaning pixel/255 (see :mod:`.dataset`); every way
out (``ds[i]``, :func:`iter_batches`, :func:`adapt_to_model`, ``ds.float_inputs()``) gives float32.
:func:`convert_images` changes an image set's channel count and size (``--grayscale``, ``--channels``,
``--resize``); :class:`ImageConversion` is such a request, as ``fit`` records it.
"""

from uncert_cli.data.adapt import adapt_to_model
from uncert_cli.data.batches import iter_batches, shard_range
from uncert_cli.data.dataset import ArrayDataset
from uncert_cli.data.normalize import NORMALIZE_PRESETS, parse_normalize
from uncert_cli.data.registry import KNOWN_DATASETS, REGISTRY, load_dataset
from uncert_cli.data.root import data_root
from uncert_cli.data.transform import ImageConversion, convert_images, parse_size

__all__ = [
    "KNOWN_DATASETS",
    "NORMALIZE_PRESETS",
    "REGISTRY",
    "ArrayDataset",
    "ImageConversion",
    "adapt_to_model",
    "convert_images",
    "data_root",
    "iter_batches",
    "load_dataset",
    "parse_normalize",
    "parse_size",
    "shard_range",
]
