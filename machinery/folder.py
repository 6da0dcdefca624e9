"""The output folder belongs to one run at a time, and a run touches only its own files.

A manifest (manifest.json) marks the folder's files as this script's; a folder holding anything
else, or a finished run, is refused rather than overwritten. An exclusive lock on run.lock
(filelock: flock on Linux and macOS, LockFileEx on Windows) keeps a second run out for the first
one's whole life; the operating system drops it however the process ends, so no lock goes stale.
"""
import contextlib
import json
import os
import re
import shutil
import socket
import time
import warnings

with warnings.catch_warnings():
    # Without fcntl outside Windows, filelock warns that only its soft lock (a lock file
    # naming its holder's PID and host) is left; that lock still refuses a second run.
    warnings.simplefilter("ignore")
    import filelock

from machinery.errors import ScriptError, environmental
from machinery.files import BACKUP_DIR, LOCK, MANIFEST, WORKERS_DIR, run_files, write_json

WRITTEN_BY = "model_batchnorm.py"
DELETION_SAFE = "every file listed here was written by model_batchnorm.py; --overwrite deletes them"


def read_manifest(out):
    """This script's manifest in `out`, or None (absent, or not ours)."""
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("written_by") == WRITTEN_BY \
        else None


def ours(manifest):
    if manifest is None:
        return set()
    return {MANIFEST, LOCK, *manifest.get("files", [])}


def listing(names, most=5):
    names = sorted(names)
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def workers_folder(out):
    """{workers} if `out` holds the other workers' folders (which they may create before
    the chief writes its manifest), else nothing."""
    workers = out / WORKERS_DIR
    if workers.is_dir() and all(re.fullmatch(r"(chief|worker)-\d+", path.name)
                                for path in workers.iterdir()):
        return {WORKERS_DIR}
    return set()


def refuse_foreign(out, manifest, lock_is_ours=False):
    foreign = {path.name for path in out.iterdir()} - ours(manifest) - (
        {LOCK} if lock_is_ours else set()) - workers_folder(out)
    if foreign:
        raise ScriptError(
            f"{out} holds files this script did not write ({listing(foreign)}): move them "
            "away or choose another --output-dir (the script never deletes what it did not "
            "write)")


def refuse_finished(out, manifest, overwrite):
    if manifest and manifest.get("state") == "finished" and not overwrite:
        kept = set(manifest.get("files", [])) - {MANIFEST, LOCK}
        raise ScriptError(
            f"{out} holds a finished run of this script ({listing(kept)}; finished "
            f"{manifest.get('finished', '?')}): add --overwrite to replace it, or choose "
            "another --output-dir")


def remove_run(out, manifest):
    """--overwrite: delete the files the manifest lists, nothing else; the other workers'
    folders are theirs to replace (startup.own_folder)."""
    for name in ours(manifest) - {MANIFEST, LOCK, WORKERS_DIR}:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def now():
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")


def write_manifest(out, **fields):
    """Write the manifest, unless it already says exactly this: a refused or repeated
    start leaves the folder as it was, modification times included."""
    manifest = {"written_by": WRITTEN_BY, "note": DELETION_SAFE, **fields}
    if read_manifest(out) != manifest:
        write_json(out / MANIFEST, manifest)


# Byte 0 of run.lock is the one Windows' LockFileEx locks, which no other handle may read
# or write while it is held; the holder's line follows it.
HOLDER_AT = 1


def soft_lock():
    """filelock's lock without fcntl or Windows: it writes its own holder record."""
    return not issubclass(filelock.FileLock, (filelock.UnixFileLock, filelock.WindowsFileLock))


def holder(out):
    """Who holds run.lock in `out`, as its holder wrote it; 'starting up' until it has."""
    try:
        with open(out / LOCK, "rb") as file:
            if soft_lock():  # filelock's record: PID, host, ...
                pid, host = file.read(500).decode(errors="replace").split("\n")[:2]
                return f"PID {pid} on {host}"
            file.seek(HOLDER_AT)
            return file.read(500).decode(errors="replace").strip("\0\n ") or "starting up"
    except (OSError, ValueError):
        return "starting up"


def take_lock(out):
    """Lock run.lock, or stop with one line naming its holder. A run.lock of a folder
    without this script's manifest is someone else's file: refused, never locked."""
    if (out / LOCK).exists() and read_manifest(out) is None:
        refuse_foreign(out, None)
    lock = filelock.FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise ScriptError(f"another run is using {out} ({holder(out)}): wait for it to end, "
                          "or choose another --output-dir") from None
    if not soft_lock():
        with contextlib.suppress(OSError), open(out / LOCK, "r+b") as file:  # else: unnamed
            file.seek(HOLDER_AT)
            file.write(f"PID {os.getpid()} on {socket.gethostname()}, started {now()}\n"
                       .encode())
    return lock


@contextlib.contextmanager
def locked(out):
    """Hold run.lock in `out` for the block, with who holds it written inside."""
    lock = take_lock(out)
    try:
        yield
    finally:
        # flock's file goes while still locked: a run waiting on it then sees it gone and
        # makes a new one (filelock checks). Windows' and the soft lock delete their own.
        if isinstance(lock, filelock.UnixFileLock):
            (out / LOCK).unlink(missing_ok=True)
        lock.release()


def finish(out, started, names):
    """The backups (the run's, and its sub-folders' under --compare) go last, once every
    output is written; then the run is marked done."""
    for folder in ("", *names):
        shutil.rmtree(out / folder / BACKUP_DIR, ignore_errors=True)
    written = [name for name in names if (out / name).exists()]
    write_manifest(out, state="finished", started=started, finished=now(), files=written)


def claim(out, overwrite):
    """Inside the lock: refuse what must not be touched, clear an old run if asked."""
    manifest = read_manifest(out)
    refuse_foreign(out, manifest, lock_is_ours=True)
    refuse_finished(out, manifest, overwrite)
    if overwrite and manifest:
        remove_run(out, manifest)
        manifest = None
    return manifest.get("started", now()) if manifest else now()


@contextlib.contextmanager
def claimed(out, overwrite=False, names=None):
    """The run's whole life in `out`: locked, its own files only; a full disk or read-only folder
    is one line (errors.environmental). `names`: all it may create there (files.run_files())."""
    names = run_files() if names is None else names
    # Before creating run.lock in a stranger's folder; take_lock judges run.lock itself.
    refuse_foreign(out, read_manifest(out), lock_is_ours=True)
    with locked(out):
        started = claim(out, overwrite)
        write_manifest(out, state="running", started=started, files=names)
        try:
            yield
            finish(out, started, names)
        except OSError as err:
            fault = environmental(err, out)
            if fault:
                raise fault from None
            raise
        finally:
            if {path.name for path in out.iterdir()} <= {MANIFEST, LOCK}:
                (out / MANIFEST).unlink(missing_ok=True)  # nothing written: leave no trace
