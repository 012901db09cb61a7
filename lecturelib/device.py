"""Device choice, seeding, and the one "scale" knob that every chapter reads.

Scale: ``LECTURELIB_SCALE=quick`` sizes an experiment for a 2-core laptop CPU (each chapter in
a couple of minutes); ``full`` sizes it for a GPU. Unset, it is ``full`` when CUDA is present and
``quick`` otherwise.
"""

from __future__ import annotations

import os
import platform
import random
import sys
from typing import TypeVar

import numpy as np
import torch

SCALES = ("quick", "full")
T = TypeVar("T")


def best_device() -> torch.device:
    """The fastest device present: CUDA, then Apple MPS, then CPU.

    ``LECTURELIB_DEVICE`` (e.g. ``cpu``) overrides the choice.
    """
    forced = os.environ.get("LECTURELIB_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def scale() -> str:
    """The experiment scale, ``"quick"`` or ``"full"`` (see the module docstring)."""
    value = os.environ.get("LECTURELIB_SCALE", "").strip().lower()
    if not value:
        return "full" if best_device().type == "cuda" else "quick"
    if value not in SCALES:
        raise ValueError(f"LECTURELIB_SCALE must be one of {SCALES}, got {value!r}")
    return value


def by_scale(quick: T, full: T) -> T:
    """Pick the value for the current scale: ``epochs = by_scale(quick=2, full=20)``."""
    return quick if scale() == "quick" else full


def seed_everything(seed: int, *, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a CPU ``torch.Generator`` with that seed.

    With ``deterministic=True`` cuDNN picks deterministic kernels, so the same seed on the same
    machine gives the same numbers.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def _cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux), else ``platform.processor()``."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment() -> dict[str, str]:
    """Versions and hardware, for the record a chapter or benchmark prints."""
    dev = best_device()
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "device": str(dev),
        "scale": scale(),
        "cpu_threads": str(torch.get_num_threads()),
        "cpu": _cpu_name(),
        # the SIMD level torch's CPU kernels use: results of a long run differ between levels
        "cpu_capability": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "unknown")(),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - torchvision is a requirement
        pass
    return info


def progress_enabled() -> bool:
    """Progress bars unless ``LECTURELIB_PROGRESS=0`` (set by ``make book`` and the nbval tests,
    so stored outputs stay stable)."""
    return os.environ.get("LECTURELIB_PROGRESS", "1") != "0"
