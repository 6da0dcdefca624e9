"""The problems a user can fix. Each is shown as one line, without a traceback,
and ends the process with its exit code. Imports nothing of this project."""


class ScriptError(Exception):
    """A problem with the input (data, folders, files): exit code 1."""

    code = 1


class UsageError(ScriptError):
    """A bad flag or argument: exit code 2, as argparse uses."""

    code = 2


class Interrupted(ScriptError):
    """Ctrl-C during training, after what was finished has been written: exit code 130."""

    code = 130
