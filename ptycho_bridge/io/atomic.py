"""Atomic file replacement: a temporary file in the target directory, fsync, ``os.replace``.

Why: a crash or SIGKILL mid-write must leave either no file or the previous complete file, never
a partial archive that a GUI would then fail to open. Existing outputs are only replaced when the
caller says ``force``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import IO, Callable, Iterator

from ptycho_bridge.errors import OutputExistsError


def resolve_output(out: str | os.PathLike[str], default_name: str = "wts.h5.zip") -> Path:
    """``OUT`` ending in ``.zip``/``.onnx``/``.npz`` is a file; anything else is a folder holding ``default_name``."""
    p = Path(out)
    if p.suffix in (".zip", ".onnx", ".npz", ".ckpt", ".pth") or (p.exists() and p.is_file()):
        return p
    return p / default_name


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def refuse_existing(path: str | os.PathLike[str], *, force: bool) -> None:
    """Fail early (before slow work) when ``path`` exists and the caller did not say ``force``."""
    target = Path(path)
    if target.exists() and not force:
        raise OutputExistsError(f"{target} exists; pass --force to replace it")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], *, force: bool = False,
                 check: Callable[[Path], None] | None = None, private: bool = False) -> Iterator[IO[bytes]]:
    """Yield a binary file; on success it atomically becomes ``path``; on error nothing is left.

    ``check(temp_path)`` runs on the complete, fsynced temporary file before the rename; if it raises,
    the temporary file is removed and nothing appears at ``path`` (writers validate their output here,
    so an invalid archive is never left behind).

    Without ``force`` the commit is a hard link, which fails if ``path`` appeared meanwhile, so a
    file created by someone else during the write is never clobbered either.

    ``private`` keeps the file 0600 (a cache of the user's weights); otherwise it is readable as the umask allows.
    """
    target = Path(path)
    refuse_existing(target, force=force)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if not private:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; an archive is read by other users (Ptychodus)
        with os.fdopen(fd, "w+b") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        if check is not None:
            check(tmp)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise OutputExistsError(f"{target} exists; pass --force to replace it") from None
            tmp.unlink()
        tmp = None  # type: ignore[assignment]
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()
