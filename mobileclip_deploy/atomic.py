"""Atomic writes: an interrupted run must never leave a file that looks finished, nor lose what stood there.

The writer refuses, rather than removes, whatever it was not told to replace: an existing destination is
replaced only when the caller passes `replace=True` (it is that command's documented job), and never by a
thing of another kind (a file never takes the place of a folder, or a folder of a file).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from mobileclip_deploy.errors import UserError


def check_destination(final: str | os.PathLike[str], what: str = "output") -> Path:
    """Refuse, before any work, a destination that cannot be written: under a file, in a read-only folder, or
    a folder where a file is meant to go. Creates nothing."""
    final = Path(final)
    if final.is_dir():
        raise UserError(f"{what} {final} is a folder; give a file name (nothing was written)")
    parent = _folder_above(final, what)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"cannot write {what} {final}: {parent} is not writable")
    return final


def check_folder(folder: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, an output folder that cannot be made or written. Creates nothing, so a refused
    run leaves no empty folder behind."""
    folder = Path(folder)
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot write to output folder {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write to output folder {folder}: {existing} is not writable")
    return folder


def _folder_above(final: Path, what: str = "output") -> Path:
    """The nearest existing folder above `final`; a file in the way is refused by name."""
    parent = final.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"cannot write {what} {final}: {parent} is a file, not a folder")
    return parent


def _refuse_kind_change(final: Path, target: Path) -> None:
    if final.is_dir() and not final.is_symlink() and not target.is_dir():
        raise UserError(f"{final} is a folder; refusing to replace it with a file (choose a file name)")
    if final.exists() and not final.is_dir() and target.is_dir():
        raise UserError(f"{final} is a file; refusing to replace it with a folder")


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str], *, replace: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling path (file or folder) that is renamed to `final` only on success.

    An existing `final` is refused unless `replace`; even then it is swapped out (renamed aside first) and
    removed only once the new one is in place, so a failure at any point leaves either the old or the new.
    """
    final = Path(final)
    if final.exists() and not replace:
        kind = "is a folder" if final.is_dir() else "already exists"
        raise UserError(f"{final} {kind}; refusing to replace it (move it away or choose another name)")
    _folder_above(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".partial", dir=final.parent))
    except OSError as exc:
        raise UserError(f"cannot write {final}: {exc.strerror or exc}") from exc
    target = tmp / final.name
    try:
        yield target
        if not target.exists():
            raise FileNotFoundError(f"nothing was written to {target}")
        if final.exists() and not replace:  # appeared while we worked
            raise UserError(f"{final} appeared while it was being written; refusing to replace it")
        _refuse_kind_change(final, target)
        aside = None
        if final.is_dir() and not final.is_symlink():
            aside = tmp / ".old"  # a folder cannot be os.replace'd by another; swap it out first
            os.rename(final, aside)
        try:
            os.replace(target, final)
        except BaseException:
            if aside is not None:
                os.rename(aside, final)  # put the old one back: the user keeps what they had
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_bytes(final: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> Path:
    with atomic_path(final, replace=replace) as tmp:
        tmp.write_bytes(data)
    return Path(final)


def write_text(final: str | os.PathLike[str], text: str, *, replace: bool = False) -> Path:
    return write_bytes(final, text.encode("utf-8"), replace=replace)


@contextlib.contextmanager
def locked_folder(folder: Path, on_wait=None) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (flock on the folder itself, so no lock file is left behind).

    A second holder waits; `on_wait()` is called once if it has to, so the user learns why nothing happens.
    """
    while True:
        fd = os.open(folder, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
                on_wait = None
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(folder).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:  # the holder removed the folder it had created and found nothing to keep
            same = False
        if same:
            break
        os.close(fd)
        folder.mkdir(parents=True, exist_ok=True)
    try:
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def exclusive_folder(folder: Path, what: str) -> Iterator[None]:
    """One run per folder (`distill -o`, `reinforce -o`): flock on the folder itself, so no lock file is left
    behind; a second run is refused at once rather than interleaving its checkpoints or shards with the first."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise UserError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(f"another {what} run is using {folder}; wait for it to finish or choose another -o.") \
                from None
        yield
    finally:
        os.close(fd)
