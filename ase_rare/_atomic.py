"""Checkpoint files written whole or not at all."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_atomic(data, path: Path, what: str = "checkpoint") -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over path.

    A crash or a full disk never leaves a half-written file: either the new one
    or the previous one is on disk.

    Raises
    ------
    OSError
        Naming ``what`` and ``path``, when the file cannot be written; the
        previous file is intact and no temporary file is left behind. With an
        errno, the subclass (PermissionError, ...) is kept.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            torch.save(data, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        message = (
            f"could not write the {what} {path} ({err}); the previous checkpoint, "
            "if any, is intact. Free disk space or choose a writable checkpoint path."
        )
        args = (message,) if err.errno is None else (err.errno, message)
        raise OSError(*args) from err
