"""Writing a file so that a kill at any moment leaves either the old file or the new one, whole."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from charrnn.core.errors import UserError

# Errors of the storage, not of the program: what to tell the user instead of a traceback.
STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EROFS: "the file system is read-only",
    errno.ENOTDIR: "a part of the path is a file, not a directory",
}


KEPT = "free space or pick a writable place, then resume=: the last good checkpoint is kept"


def storage_error(
    error: BaseException, path: str | os.PathLike[str] | None = None, fix: str = KEPT, creating: bool = False
) -> UserError | None:
    """One sentence for a write that failed because of the storage (space, permissions), else None.

    ``creating``: the error came from making a new directory, where a missing parent is the place's fault too.

    torch.save reports a full disk as a RuntimeError without an errno, so free space is checked too.
    """
    where = str(getattr(error, "filename", None) or path or "")
    reason = STORAGE_ERRNOS.get(getattr(error, "errno", None) or -1)
    if reason is None and creating and getattr(error, "errno", None) == errno.ENOENT:
        reason = "that directory cannot be created there"
    if reason is None and isinstance(error, RuntimeError) and where:
        existing = next((p for p in [Path(where), *Path(where).parents] if p.exists()), None)
        if existing is not None and shutil.disk_usage(existing).free < 1 << 20:
            reason = STORAGE_ERRNOS[errno.ENOSPC]
    if reason is None:
        return None
    return UserError(f"cannot write {where!r}: {reason}; {fix}")


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, flush it to disk, then rename it over ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
