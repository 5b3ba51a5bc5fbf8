"""Atomic file writes: a reader or a crash never sees half a file."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Call `write(temporary_path)`, then rename the temporary file to `path` in one step.

    The temporary file lies in the target's folder (a rename across file systems is not atomic)
    and keeps the target's suffix, so writers that choose a format by extension still work. If
    `write` fails, the temporary file is removed and an existing `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.partial{path.suffix}")
    # created here with O_EXCL so that the usual permissions (umask) apply, not mkstemp's 0600
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        write(temporary)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
