"""The problems a user can fix. Each is shown as one line, without a traceback,
and ends the process with its exit code. Imports nothing of this project."""
import errno


class ScriptError(Exception):
    """A problem with the input (data, folders, files): exit code 1."""

    code = 1


class UsageError(ScriptError):
    """A bad flag or argument: exit code 2, as argparse uses."""

    code = 2


class Interrupted(ScriptError):
    """Ctrl-C during training, after what was finished has been written: exit code 130."""

    code = 130


class Terminated(Interrupted):
    """SIGTERM (timeout, systemd, Slurm, Kubernetes) handled like Ctrl-C: exit 128 + 15."""

    code = 143


class TerminationSignal(KeyboardInterrupt):
    """Raised by the SIGTERM handler, so that every `except KeyboardInterrupt` that
    saves a Ctrl-C'd run saves a terminated one too."""


def interruption_behind(err):
    """The Ctrl-C (KeyboardInterrupt, or TerminationSignal) that `err` is or was raised
    while handling, else None. A signal can land inside a library's context manager,
    whose clean-up then fails in its place (TensorFlow, as an iterator is made: "Exiting
    device scope without proper scope nesting"); it is still the user's Ctrl-C."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, KeyboardInterrupt):
            return err
        seen.add(id(err))
        err = err.__context__
    return None


# Faults of the machine, not of the program: full disk or quota, a file over the
# size limit, a read-only or forbidden folder, a failing device.
ENVIRONMENTAL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES,
                 errno.EPERM, errno.EIO}


def environmental(err, path):
    """The one-line ScriptError for an OSError the user must fix (naming `path` where
    the error names none), or None for anything else, which is a bug to show in full."""
    if not isinstance(err, OSError) or err.errno not in ENVIRONMENTAL:
        return None
    where = err.filename or path
    return ScriptError(f"{where}: {err.strerror}: make room or fix the folder's "
                       "permissions, then run the same command again (the backup of the "
                       "completed epochs is kept)")
