"""Where a result came from: the machine, the library versions and the code version."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

from srpo import __version__


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor()
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor()


def machine_info() -> dict:
    return {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# What `dvc repro` itself rewrites before the report is written: not a change to the code.
_PIPELINE_WRITES = (":(top,exclude,glob)**/dvc.lock", ":(top,exclude)reports")


def git_revision(cwd: Path | None = None) -> str | None:
    """The short commit of the working tree, with ``+dirty`` when its code or params have uncommitted changes.

    Lock files and published outputs, which the pipeline itself rewrites, do not count.
    ``cwd``: a directory in the repository (default: this package's).
    """
    cwd = cwd or Path(__file__).parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=cwd, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", *_PIPELINE_WRITES],
            capture_output=True,
            text=True,
            cwd=cwd,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (rev + ("+dirty" if dirty else "")) if rev else None


def code_version() -> str:
    rev = git_revision()
    return f"srpo-bench {__version__}" + (f" ({rev})" if rev else "")
