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
import time
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
             errno.EISDIR: "it is a folder", errno.ENAMETOOLONG: "name too long",
             errno.ELOOP: "a symbolic link loop", errno.EIO: "input/output error (a failing disk or network share)"}


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
           else "remove the link loop or name the real path" if exc.errno == errno.ELOOP
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
            owner = _live_owner(path)
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise OutputInUse(f"{out} is in use by {who}; wait for it to finish, or stop it, or choose another "
                            "--out") from None
        with contextlib.suppress(OSError):  # who holds it, for the message of a refused writer (best effort)
            path.write_text(f"{os.getpid()} {socket.gethostname()}\n")
        try:  # a lock covers its output's whole tree: no writer inside or above another running writer's output
            _refuse_nested_writer(Path(out).expanduser().resolve())
        except BaseException:
            with contextlib.suppress(OSError):
                path.write_text("")
            with contextlib.suppress(Exception):
                lock.release(force=True)
            raise
        record_written(path, check=False)  # inside another doll output (the demo's), the lock file is doll's too
    except OSError as exc:  # the folder cannot be written: say so about --out, not about the lock file
        raise type(exc)(exc.errno, exc.strerror, str(out)) from None
    with _HELD_GUARD:
        _HELD[key] = lock
    if before and before != (os.getpid(), socket.gethostname()):
        print(f"note: {out} was left locked by process {before[0]} on {before[1]}, which stopped without finishing; "
              "taking it over", file=sys.stderr)


def _held_by_this_process(lock_path: Path) -> bool:
    with _HELD_GUARD:
        return any(key[0] == str(lock_path) for key in _HELD)


def _held_elsewhere(lock_path: Path) -> bool:
    """Whether another process holds the lock file ``lock_path`` now (tried without waiting)."""
    from filelock import FileLock, Timeout

    if not lock_path.is_file() or _held_by_this_process(lock_path):
        return False
    try:
        probe = FileLock(str(lock_path), timeout=0, thread_local=False)
    except TypeError:  # filelock < 3.10
        probe = FileLock(str(lock_path), timeout=0)
    try:
        probe.acquire(timeout=0)
    except Timeout:
        return True
    except OSError:
        return False
    probe.release(force=True)
    return False


def _refuse_nested_writer(out: Path) -> None:
    """Refuse ``out`` when another process writes into a folder above it (``big/`` while
    this is ``big/member_0``) or below it: locks are per path, so without this two nested
    writers would each delete or replace the other's files and both report success."""
    for above in out.parents:
        if above.parent == above:
            break
        lock_path = above.parent / f".{above.name}.lock"
        if _held_elsewhere(lock_path):
            owner = _live_owner(lock_path)
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise OutputInUse(f"{out} is inside {above}, which {who} is writing now; wait for it to finish, or "
                              "choose an --out outside it")
    if out.is_dir():
        for lock_path in out.rglob(".*.lock"):
            if _held_elsewhere(lock_path):
                inner = lock_path.parent / lock_path.name[1:-len(".lock")]
                owner = _live_owner(lock_path)
                who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
                raise OutputInUse(f"{out} holds {inner}, which {who} is writing now; wait for it to finish, or "
                                  "choose another --out")


def _owner(path: Path) -> tuple[int, str] | None:
    try:
        pid, host = path.read_text().split()[:2]
        return int(pid), host
    except (OSError, ValueError):
        return None


def _live_owner(path: Path, wait: float = 2.0) -> tuple[int, str] | None:
    """The holder of the held lock file ``path`` for a refused writer's message: the holder
    writes its pid just after taking the lock, so a writer refused in between finds the file
    empty, or naming the process that held it before and died; wait up to ``wait`` seconds
    for a holder that is alive (one on another host is taken as written). None if none shows."""
    deadline = time.monotonic() + wait
    while True:
        owner = _owner(path)
        if owner and (owner[1] != socket.gethostname() or _pid_alive(owner[0])):
            return owner
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        pass
    return True


def release_outputs(keep=(), thread: int | None = None) -> None:
    """Release the output locks this process holds, but those in ``keep`` (keys of
    ``_HELD``), and with ``thread`` only those that thread took. The CLI calls it when a
    command ends, :func:`releases_outputs` when a stage returns (its own thread's: stages
    running side by side in threads, as `doll study --devices` runs cells, keep theirs),
    and it runs at exit. The lock file stays, emptied: a waiting writer shares its inode."""
    with _HELD_GUARD:
        held = [(key, lock) for key, lock in _HELD.items()
                if key not in keep and (thread is None or key[1] == thread)]
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
            release_outputs(keep=before, thread=threading.get_ident())

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


# -- what doll owns: the manifest of every output folder ----------------------------------------

# Every folder doll writes into as an --out holds this file: its first line is a JSON header
# (doll's version, the command, the fingerprints of the run's inputs), then one relative path
# per line, appended *before* the file is created. A folder is doll's only if it holds a
# manifest, and a file in it is doll's only if the manifest lists it (or a deeper folder's
# manifest does): --overwrite deletes exactly those and refuses when anything else is there.
MANIFEST = ".doll-files"
_MANIFEST_CACHE: dict[Path, set[str]] = {}  # manifest -> the paths it lists (this process's view)
_MANIFEST_GUARD = threading.Lock()


def manifest_of(folder: str | Path) -> Path:
    return Path(folder) / MANIFEST


def is_doll_output(folder: str | Path) -> bool:
    return manifest_of(folder).is_file()


def read_manifest(folder: str | Path) -> tuple[dict, set[str]]:
    """The header and the listed relative paths of ``folder``'s manifest (a damaged header
    reads as ``{}``: the paths still say what doll wrote)."""
    import json

    lines = manifest_of(folder).read_text(encoding="utf-8", errors="replace").splitlines()
    header = {}
    if lines:
        try:
            header = json.loads(lines[0])
        except ValueError:
            header = {}
        header = header if isinstance(header, dict) else {}
    return header, {line for line in lines[1:] if line and not line.startswith("{")}


def claim_folder(folder: str | Path, header: dict) -> None:
    """Make ``folder`` (created, empty or already doll's) a doll output: write its manifest
    with ``header`` unless one is there (a resumed run keeps the header it started with)."""
    import json

    folder = Path(folder)
    manifest = manifest_of(folder)
    if not manifest.exists():
        manifest.write_text(json.dumps(header, sort_keys=True) + "\n", encoding="utf-8")
        _apply_umask(manifest)
    with _MANIFEST_GUARD:
        _MANIFEST_CACHE.pop(manifest.resolve(), None)


def _owning_manifest(path: Path) -> Path | None:
    """The manifest of the deepest doll output folder above ``path`` (None outside any)."""
    for folder in path.parents:
        manifest = folder / MANIFEST
        if manifest.is_file():
            return manifest
    return None


def record_written(path: str | Path, check: bool = True) -> None:
    """Call before doll creates or replaces ``path``: list it in the manifest of the doll
    output it lies in. Refuses (DollError) to replace a file there that doll did not write
    (unless ``check`` is False: a lock file, created before it can be listed)."""
    path = Path(os.path.abspath(path))
    manifest = _owning_manifest(path)
    if manifest is None or path == manifest:
        return
    rel = path.relative_to(manifest.parent).as_posix()
    key = manifest.resolve()
    with _MANIFEST_GUARD:
        listed = _MANIFEST_CACHE.get(key)
        if listed is None:
            listed = _MANIFEST_CACHE[key] = read_manifest(manifest.parent)[1]
        if rel in listed:
            return
        if check and path.exists() and not path.is_dir() and rel not in read_manifest(manifest.parent)[1]:
            raise DollError(f"{path} was not written by doll; refusing to replace it (move it out of "
                            f"{manifest.parent}, or choose another --out)")
        with open(manifest, "a", encoding="utf-8") as fh:
            fh.write(rel + "\n")
        listed.add(rel)


def foreign_entries(folder: str | Path) -> list[Path]:
    """What lies in the doll output ``folder`` that no manifest in it lists: files, links and
    folders holding neither a listed file nor a manifest. Sorted; empty for a pure doll output."""
    folder = Path(folder)
    found: list[Path] = []

    def walk(d: Path, manifest_dir: Path, listed: set[str]) -> bool:
        """Append what is foreign under ``d``; return whether ``d`` holds anything of doll's."""
        if (d / MANIFEST).is_file():
            manifest_dir, listed = d, read_manifest(d)[1]
        ours = d == manifest_dir
        for entry in sorted(d.iterdir()):
            rel = entry.relative_to(manifest_dir).as_posix()
            if entry.name == MANIFEST and d == manifest_dir:
                continue
            if entry.is_dir() and not entry.is_symlink():
                if walk(entry, manifest_dir, listed):
                    ours = True
                elif not any(entry.iterdir()) and any(p.startswith(rel + "/") for p in listed):
                    ours = True  # an emptied folder of doll's
                elif not any(entry.iterdir()):
                    found.append(entry)
            elif rel in listed or _TEMPORARY.match(entry.name):
                ours = True
            else:
                found.append(entry)
        return ours

    walk(folder, folder, read_manifest(folder)[1])
    return sorted(found)


def remove_doll_output(folder: str | Path) -> None:
    """Delete what doll wrote in ``folder`` (every file its manifests list, then the folders
    emptied by that, the manifests last); refuse, deleting nothing, when anything else is
    there. ``folder`` itself stays."""
    folder = Path(folder)
    foreign = foreign_entries(folder)
    if foreign:
        extra = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise DollError(f"--overwrite: {foreign[0]}{extra} in {folder} were not written by doll; refusing to delete "
                        "anything there (move them out, or choose another --out)")
    manifests = sorted(folder.rglob(MANIFEST), key=lambda p: -len(p.parts))
    for manifest in manifests:
        for rel in read_manifest(manifest.parent)[1]:
            target = manifest.parent / rel
            if target.is_file() or target.is_symlink():
                target.unlink()
    remove_leftover_temporaries(folder)
    for d in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()  # only folders left empty
    for manifest in manifests:
        if manifest.parent != folder:
            with contextlib.suppress(OSError):
                manifest.unlink()
                manifest.parent.rmdir()
    with _MANIFEST_GUARD:
        _MANIFEST_CACHE.clear()
    manifest_of(folder).unlink()


# -- permissions ----------------------------------------------------------------------------------

def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _apply_umask(path: str | Path) -> None:
    """Give ``path`` the mode a plain ``open()`` would have (``tempfile.mkstemp`` makes 0600
    files, which break a lab's shared folder)."""
    with contextlib.suppress(OSError):
        os.chmod(path, 0o666 & ~_UMASK)


# -- names read from files become paths only when they are names ------------------------------

_SEPARATORS = re.compile(r"[/\\:*?\"<>|]")


def safe_name(name: str, fallback: str = "_") -> str:
    """A string read from a file (a class or structure name, an image id) or a file name,
    made ONE path component: separators (``/``, ``\\``, ``:``, ...) and control characters
    become ``_``, leading dots and surrounding spaces are dropped (no ``.``, ``..``, hidden
    files), at most 100 characters; ``fallback`` when nothing is left. Names from files are
    data, never paths."""
    import unicodedata

    cleaned = "".join("_" if unicodedata.category(ch)[0] == "C" else ch for ch in str(name))
    cleaned = _SEPARATORS.sub("_", cleaned).strip().lstrip(".").strip()[:100].rstrip(" .")
    return cleaned or fallback


def inside(out: str | Path, path: str | Path) -> Path:
    """``path``, checked to resolve inside ``out`` (a DollError otherwise): every write of a
    name that came from a file goes through here."""
    out_r, path_r = Path(out).resolve(), Path(path).resolve()
    if path_r != out_r and out_r not in path_r.parents:
        raise DollError(f"refusing to write {path}: it resolves outside {out}")
    return Path(path)


# -- inputs are never outputs ---------------------------------------------------------------------

def resolved(path: str | Path, option: str = "") -> Path:
    """``path`` made absolute with its links followed; a link loop is a DollError."""
    try:
        return Path(path).expanduser().resolve()
    except (RuntimeError, OSError):  # Python < 3.13 raises RuntimeError for a loop
        raise DollError(f"{option + ' ' if option else ''}{path}: a symbolic link loop; remove the loop or name the "
                        "real path") from None


def check_inputs_apart(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse an ``--out`` that is, lies inside or holds one of the command's inputs
    (``{"--init": path, ...}``): no command deletes or writes inside its own inputs.
    Checked before anything is created or removed."""
    out_r = resolved(out, "--out")
    for option, value in inputs.items():
        value = "" if value is None else str(value).removeprefix("imagenet:")  # imagenet:FILE is a file too
        if value in ("", "random") or (":" in value and not Path(value).exists()):  # not a path
            continue
        in_r = resolved(value, option)
        if out_r == in_r or in_r in out_r.parents:
            raise DollError(f"--out {out} is inside {option} {value}; doll never writes inside its inputs: choose an "
                            "--out elsewhere")
        if out_r in in_r.parents:
            raise DollError(f"--out {out} holds {option} {value}; doll never writes around its inputs (--overwrite "
                            "would delete it): choose an --out elsewhere")


def fingerprint(path: str | Path) -> str | None:
    """A short digest of an input (a file's size and content; a folder's index files down to
    two levels: CSV, JSON, HDF5, safetensors): ``--resume`` continues only on the inputs a run
    started with. Large files are read at their first and last MiB."""
    import hashlib

    path = Path(path)
    if not path.exists():
        return None
    digest = hashlib.sha256()

    def add_file(p: Path) -> None:
        size = p.stat().st_size
        digest.update(f"{p.name}:{size}:".encode())
        with open(p, "rb") as fh:
            if size <= 4 << 20:
                digest.update(fh.read())
            else:
                digest.update(fh.read(1 << 20))
                fh.seek(size - (1 << 20))
                digest.update(fh.read(1 << 20))

    if path.is_file():
        add_file(path)
    else:
        index = (".csv", ".json", ".h5", ".safetensors", ".txt")
        found = [p for p in sorted(path.glob("*")) + sorted(path.glob("*/*"))
                 if p.is_file() and p.suffix.lower() in index and not p.name.startswith(".")]
        for p in found[:64]:
            digest.update(p.relative_to(path).as_posix().encode())
            add_file(p)
    return digest.hexdigest()[:16]
