"""Compatibility tests: factor files and JSON documents written by an earlier uncert (see make_files.py)."""

from __future__ import annotations

import sys
from pathlib import Path


_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

