"""Sample checkpoints shipped inside the package: the embedded default for ``uncert demo`` and the
toy regression network of ``uncert toy``.
"""

from importlib import resources
from pathlib import Path


def sample_path(name: str = "digits_mlp.safetensors") -> Path:
    """Path of a shipped sample checkpoint."""
    return Path(str(resources.files(__name__).joinpath(name)))
