"""Stop a run with a signal at a known point, instead of racing a timer against it.

    python tests/stop_at.py SIGNAL WHERE [LINES] SCRIPT [ARGUMENTS...]

runs SCRIPT (e.g. model_batchnorm.py) as `python SCRIPT ARGUMENTS` would, and sends
SIGNAL (SIGTERM or SIGINT) to its own process at WHERE: the dotted path of a function
or method (`machinery.data.load`, `keras.callbacks.CSVLogger.on_epoch_end`), as it is
called, `after:` it returns, or with `#N` at its N-th call (`...on_epoch_end#2`);
`swallow:` first, and the exception the handler raises there is caught and dropped, as
TensorFlow's C++ can drop one that lands inside it.
LINES, a number: instead, the LINES-th line of Python executed from WHERE on (until
the next training step begins) in the files whose paths contain one of TRACED (0: at
WHERE itself); `-` for none. After the
run, `stop_at: N lines` on stderr counts the traced lines it saw, for a sweep over
them. The process sends itself the signal, so Python runs its handler at once: where
a signal is taken is decided here, not by how busy the machine is. A test-only tool:
it imports nothing of the project before the script does, except to patch WHERE.
"""
import importlib
import os
import runpy
import signal
import sys
from pathlib import Path

# The code of an epoch's end that a signal can land in: the callbacks, Keras' loop and
# callback list, the context managers that hold stderr's filter, this project's own.
TRACED = ("machinery", "keras/src/callbacks", "keras/src/backend/tensorflow/trainer.py",
          "keras/src/trainers/epoch_iterator.py", "contextlib.py", "tempfile.py",
          "model_batchnorm.py")


def resolve(path):
    """(owner, attribute name) of a dotted path: the longest importable module prefix,
    then attributes."""
    parts = path.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        try:
            owner = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:-1]:
            owner = getattr(owner, name)
        return owner, parts[-1]
    raise SystemExit(f"stop_at: cannot import {path}")


class LineCounter:
    """Counts the traced lines executed from its start; sends the signal at `target`."""

    def __init__(self, signal_number, target):
        self.signal_number, self.target, self.count, self.fired = signal_number, target, 0, False
        self.where = None  # file:line where the signal was sent

    def trace(self, frame, event, arg):
        if self.fired:
            return None
        if event == "call" and frame.f_code.co_name == "on_train_batch_begin":
            self.fired = True  # the next training step: the window ends
            sys.settrace(None)
            return None
        if event == "line" and any(part in frame.f_code.co_filename for part in TRACED):
            if self.target is not None and self.count == self.target:
                self.fired = True
                self.where = f"{frame.f_code.co_filename}:{frame.f_lineno}"
                sys.settrace(None)
                os.kill(os.getpid(), self.signal_number)
                return None
            self.count += 1
        return self.trace

    def start(self, frame):
        """Trace from here on, the callers that are running included."""
        while frame is not None:
            frame.f_trace, frame.f_trace_lines = self.trace, True
            frame = frame.f_back
        sys.settrace(self.trace)


def install(signal_number, where, lines=None):
    """Patch `where` (see the module's docstring) to send the signal; returns the
    LineCounter (None without `lines`) and a function that undoes the patch."""
    swallow = where.startswith("swallow:")
    where = where.removeprefix("swallow:")
    after = where.startswith("after:")
    path, _, nth = where.removeprefix("after:").partition("#")
    nth = int(nth or 1)
    owner, name = resolve(path)
    original = getattr(owner, name)
    counter = LineCounter(signal_number, lines) if lines is not None else None
    calls = [0]

    def stop():
        if counter is not None:
            counter.start(sys._getframe(2))
            if lines == 0:
                counter.trace(sys._getframe(1), "line", None)
        elif swallow:
            try:
                os.kill(os.getpid(), signal_number)
            except BaseException:  # noqa: B036 (what the library does)
                print(f"stop_at: dropped {signal_number}", file=sys.stderr)
        else:
            os.kill(os.getpid(), signal_number)

    def patched(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth and not after:
            stop()
        result = original(*args, **kwargs)
        if calls[0] == nth and after:
            stop()
        return result

    setattr(owner, name, patched)
    return counter, lambda: setattr(owner, name, original)


def command(signal_name, where, *arguments, script="model_batchnorm.py"):
    """The command line that runs `script` with `arguments`, stopped by `signal_name`
    (SIGTERM, SIGINT, SIGKILL, SIGSTOP) at `where`; run it in the project's root."""
    return [sys.executable, str(Path(__file__)), signal_name, where, "-", script,
            *map(str, arguments)]


def main(argv):
    signal_name, where, lines, script, *arguments = argv
    import machinery.quiet  # noqa: F401  (TensorFlow's start-up lines filtered, as the script does)
    counter, _ = install(getattr(signal, signal_name), where, None if lines == "-" else int(lines))
    sys.argv = [script, *arguments]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        if counter is not None:
            print(f"stop_at: {counter.count} lines", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, os.getcwd())
    main(sys.argv[1:])
