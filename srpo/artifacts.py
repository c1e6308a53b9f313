"""Atomic writes of run artifacts: a reader never sees a half-written file.

Each writer puts the bytes in a temporary file in the destination directory,
flushes it to disk, then renames it over the target (atomic on POSIX).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

import torch


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it; set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def _sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C that arrives inside the block and raise it once the block is done.

    A KeyboardInterrupt raised inside a writer's cleanup (torch's zip writer closes its
    archive in ``__exit__``) comes out as an unrelated RuntimeError, so the caller could not
    tell an interrupt from a failure. Writes are short; finishing one costs the user nothing.
    Signal handlers can only be set from the main thread; elsewhere the block runs as is.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); a result is read by others like any file written here.
    os.fchmod(fd, 0o666 & ~_umask())
    try:
        with _sigint_deferred():
            with os.fdopen(fd, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented, strict JSON, atomically.

    Non-finite floats (an interval that one run cannot have, a metric that is undefined) are
    written as ``null``: Python would write the bare token ``NaN``, which JSON does not have
    and which jq, JavaScript and most JSON readers outside Python reject.
    """
    plain = json.loads(json.dumps(data, default=_json_default))
    text = json.dumps(_finite_or_null(plain), indent=2, sort_keys=False, allow_nan=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def save_torch(path: Path, obj: Any) -> None:
    """torch.save ``obj`` atomically."""
    _atomic(path, lambda f: torch.save(obj, f))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8), atomically."""
    _atomic(path, lambda f: f.write(text.encode()))


def save_figure(fig: Any, path: Path, dpi: int = 110) -> None:
    """Save a matplotlib figure, atomically; the format follows the file's suffix (default png)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    _atomic(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi, bbox_inches="tight"))


def load_torch(path: Path) -> Any:
    """Load a checkpoint written by :func:`save_torch`, with a clear error if it is unreadable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise
    except Exception as exc:  # a truncated or foreign file
        raise ValueError(
            f"checkpoint {path} is corrupt or not a srpo checkpoint ({exc}); delete it to restart"
        ) from exc


def _finite_or_null(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite_or_null(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite_or_null(v) for v in obj]
    return obj


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot serialize {type(obj).__name__} to JSON")
