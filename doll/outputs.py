"""Outputs: one writer per ``--out`` (an advisory lock), file system errors as one line,
and the temporaries a killed write left (``doll.utils.prepare_out_dir`` and
``prepare_out_file`` use them for every ``--out``).

The lock is ``filelock``'s: a cross-platform lock whose OS lock (``flock`` on Unix) dies
with its process, so a run killed with ``kill -9`` leaves nothing stale to clean up.
"""
from __future__ import annotations

import atexit
import contextlib
import errno
import functools
import os
import re
import socket
import sys
import threading
from pathlib import Path

from doll.errors import DollError


def _is_main() -> bool:
    """Rank 0 under torchrun (or no torchrun): doll.train.distributed.is_main without importing torch."""
    dist = sys.modules.get("doll.train.distributed")
    return dist.is_main() if dist is not None else os.environ.get("RANK", "0") == "0"


# -- errors of the file system ------------------------------------------------------------------

# errno values that mean "this path cannot be written here", which the user can fix
FS_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
             errno.EROFS: "read-only file system", errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota exceeded",
             errno.ENOTDIR: "a part of the path is a file, not a folder", errno.EEXIST: "a file is in the way",
             errno.EISDIR: "it is a folder", errno.ENAMETOOLONG: "name too long"}


def os_error_message(exc: OSError, path: str | Path | None = None) -> str | None:
    """One line naming the path and what the file system said, for an OSError a user can fix
    (permission, read-only, quota, disk full, a file in the way); None for other errors."""
    if exc.errno not in FS_ERRNOS:
        return None
    where = exc.filename or path
    reason = FS_ERRNOS[exc.errno]
    if exc.errno in (errno.ENOTDIR, errno.EEXIST) and where:
        blocker = next((a for a in Path(where).parents if a.exists()), None)
        if blocker is not None and not blocker.is_dir():
            reason = f"{blocker} is a file, not a folder"
    fix = ("free space or choose another --out" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
           else "choose another --out or fix the folder's permissions")
    return f"cannot write {where}: {reason}; {fix}" if where else f"{reason}; {fix}"


@contextlib.contextmanager
def os_errors(path: str | Path):
    """Turn a file system error a user can fix, raised while preparing ``path``, into a DollError."""
    try:
        yield
    except OSError as exc:
        message = os_error_message(exc, path)
        if message is None:
            raise
        raise DollError(message) from None


# -- one writer per output ----------------------------------------------------------------------

# The locks this process holds: (lock file, thread) -> filelock.FileLock. Held until the
# command ends (the CLI calls release_outputs) or the process exits; the OS drops a lock
# whose process died, so there is nothing stale to clean up after kill -9.
_HELD: dict[tuple[str, int], object] = {}
_HELD_GUARD = threading.Lock()


class OutputInUse(DollError):
    """Another process (or thread) writes this output now: a benchmark running cells in
    parallel treats the cell as running elsewhere."""


def lock_file_of(out: str | Path) -> Path:
    """The lock file of an output: ``.<name>.lock`` next to it (outside it, so that
    ``--overwrite`` deleting a folder does not delete the lock a waiting writer checks)."""
    out = Path(out).expanduser().resolve()
    return out.parent / f".{out.name}.lock"


def lock_output(out: str | Path) -> None:
    """Take the advisory lock of the output ``out`` for the rest of this command, or raise
    ``DollError("<out> is in use by process N on HOST")`` when another process (or another
    thread of this one) holds it. Under torchrun only rank 0 takes it (the other ranks
    write into rank 0's output by design). Idempotent within one thread. The lock file
    holds the holder's pid and host; a file whose holder died without releasing it (kill -9)
    is taken over with a note."""
    from filelock import FileLock, Timeout

    if not _is_main():
        return
    path = lock_file_of(out)
    key = (str(path), threading.get_ident())
    with _HELD_GUARD:
        if key in _HELD:
            return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        before = _owner(path)  # read first: an old filelock truncates the file when it fails to lock it
        try:  # any thread may release it (release_outputs runs at exit)
            lock = FileLock(str(path), timeout=0, thread_local=False)
        except TypeError:  # filelock < 3.10 has no thread_local and is not thread-local
            lock = FileLock(str(path), timeout=0)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            owner = _owner(path) or before
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise OutputInUse(f"{out} is in use by {who}; wait for it to finish, or stop it, or choose another "
                            "--out") from None
        with contextlib.suppress(OSError):  # who holds it, for the message of a refused writer (best effort)
            path.write_text(f"{os.getpid()} {socket.gethostname()}\n")
    except OSError as exc:  # the folder cannot be written: say so about --out, not about the lock file
        raise type(exc)(exc.errno, exc.strerror, str(out)) from None
    with _HELD_GUARD:
        _HELD[key] = lock
    if before and before != (os.getpid(), socket.gethostname()):
        print(f"note: {out} was left locked by process {before[0]} on {before[1]}, which stopped without finishing; "
              "taking it over", file=sys.stderr)


def _owner(path: Path) -> tuple[int, str] | None:
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def release_outputs(keep=()) -> None:
    """Release the output locks this process holds, but those in ``keep`` (keys of
    ``_HELD``). The CLI calls it when a command ends, :func:`releases_outputs` when a stage
    returns, and it runs at exit. The lock file stays, emptied: a waiting writer shares its inode."""
    with _HELD_GUARD:
        held = [(key, lock) for key, lock in _HELD.items() if key not in keep]
        for key, _ in held:
            del _HELD[key]
    for (path, _), lock in held:
        with contextlib.suppress(OSError):
            Path(path).write_text("")  # released cleanly: no holder to report
        with contextlib.suppress(Exception):
            lock.release(force=True)


atexit.register(release_outputs)


def releases_outputs(fn):
    """Decorate a stage (``train_classifiers``, ``explain``, ...): the output locks it takes
    are released when it returns or raises, so that a notebook that called it does not keep
    its ``--out`` locked against a later run; the caller's own locks (``demo`` calling the
    stages) stay."""
    @functools.wraps(fn)
    def stage(*args, **kwargs):
        with _HELD_GUARD:
            before = set(_HELD)
        try:
            return fn(*args, **kwargs)
        finally:
            release_outputs(keep=before)

    return stage


# -- temporaries of a killed write --------------------------------------------------------------

# what atomic_path creates: ".<name>." + 8 characters of tempfile.mkstemp + ".tmp"
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp$")


def remove_leftover_temporaries(folder: str | Path, prefix: str | None = None, recursive: bool = True) -> int:
    """Delete the temporary files that writes killed mid-way (kill -9, a lost node) left in
    ``folder`` (and its subfolders with ``recursive``): ``.last.pt.ab12cd34.tmp`` and the like,
    gigabytes at CheXpert scale. With ``prefix``, only those of the file ``prefix`` and its
    companions (``.labels.h5.*.tmp``, ``.labels.h5.metrics.json.*.tmp``). Called once the
    output's lock is held, so no running writer owns them. Returns how many were removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    removed = 0
    for p in (folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")):
        m = _TEMPORARY.match(p.name)
        if not m or not p.is_file():
            continue
        if prefix is not None and not (m["name"] == prefix or m["name"].startswith(prefix + ".")):
            continue
        with contextlib.suppress(OSError):
            p.unlink()
            removed += 1
    return removed
