"""Put on PYTHONPATH, this makes a Python on Linux import as one on Windows would: fcntl
is not there for anybody, and no other POSIX-only module is there for the project's own
files (libraries keep theirs: on Windows they take their own Windows branches).
tests/test_platforms.py runs the product under it."""
import builtins
import importlib.abc
import os
import sys

NOWHERE = {"fcntl"}
# The standard library's modules that exist on Unix only (Python's docs, "Unix-specific").
POSIX_ONLY = NOWHERE | {"posix", "pwd", "grp", "termios", "tty", "pty", "resource", "syslog",
                        "crypt", "nis", "spwd", "posixpath", "_posixsubprocess"}
PROJECT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUTSIDE = tuple(os.path.join(PROJECT, name) + os.sep for name in ("tests", "testdata", "bench"))


def by_the_project(importer_globals):
    """The product's own files; not the tests, nor a virtual environment's libraries,
    which a checkout often holds (.venv)."""
    path = os.path.abspath((importer_globals or {}).get("__file__") or "")
    environment = (os.path.abspath(sys.prefix) + os.sep, os.path.abspath(sys.base_prefix) + os.sep)
    return (path.startswith(PROJECT + os.sep) and not path.startswith(OUTSIDE)
            and not path.startswith(environment) and "site-packages" not in path.split(os.sep))


def refused(name):
    return ModuleNotFoundError(f"No module named '{name}' (as on Windows)", name=name)


def windows_import(name, globals=None, locals=None, fromlist=(), level=0, _import=builtins.__import__):
    top = name.partition(".")[0]
    if level == 0 and (top in NOWHERE or top in POSIX_ONLY and by_the_project(globals)):
        raise refused(name)
    return _import(name, globals, locals, fromlist, level)


class NoFcntl(importlib.abc.MetaPathFinder):
    """importlib.import_module("fcntl") too."""

    def find_spec(self, name, path=None, target=None):
        if name in NOWHERE:
            raise refused(name)


for name in NOWHERE:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, NoFcntl())
builtins.__import__ = windows_import
