"""Memory sizes: parsing ``--max-memory``, memory in use and available, and the peak."""

from __future__ import annotations

import os
import re
import resource
import sys

import torch

from uncert_cli.core.errors import UserError

_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
          "g": 1e9, "gb": 1e9, "gib": 2**30, "t": 1e12, "tb": 1e12, "tib": 2**40}


def parse_size(text: str, param: str = "max_memory") -> int:
    """``"8GiB"`` → 8589934592; ``"500MB"`` → 500000000; a bare number is bytes.

    Empty or zero is refused: "no limit" is spelled by leaving the option out, not by an empty value.
    """
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        shown = f"'{text}'" if text.strip() else "an empty value"
        raise UserError(
            f"cannot read the memory size {shown} of {{param}}; write it like 8GiB, 500MB or 1073741824 "
            "(leave the option out for the default: the memory available on this machine)",
            param=param,
        )
    size = int(float(match.group(1)) * _UNITS[match.group(2).lower()])
    if size <= 0:
        raise UserError(f"{{param}} must be a positive size, got '{text}'; e.g. 8GiB", param=param)
    return size


def format_size(n_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n_bytes) < 1024 or unit == "TiB":
            return f"{n_bytes:.0f} {unit}" if unit == "B" else f"{n_bytes:.1f} {unit}"
        n_bytes /= 1024
    return f"{n_bytes:.1f} TiB"


def peak_memory_bytes(device: torch.device) -> int:
    """Peak accelerator memory on CUDA; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def current_memory_bytes(device: torch.device) -> int:
    """Memory in use now: allocated device memory on CUDA, the resident set size on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):  # not Linux: the peak so far is the closest we have
        return peak_memory_bytes(device)


def available_memory_bytes(device: torch.device) -> int | None:
    """What this process can still grow to: free device memory plus its own on CUDA; on CPU the
    system's available memory (``MemAvailable``) plus this process's resident set. None if unknown.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free) + int(torch.cuda.memory_allocated(device))
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 + current_memory_bytes(device)
    except (OSError, ValueError):
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, AttributeError):
        return None
