"""Keep TensorFlow's start-up chatter off the screen without hiding real errors.
Importing this module imports TensorFlow and Keras with those lines filtered, so it comes
before any other import of them (after the flags are checked: --help never waits)."""
import contextlib
import logging
import os
import sys
import tempfile

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Level 1 hides the C++ core's INFO lines; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# TensorFlow writes these to the native stderr on every start, before any log
# level applies. They describe the build and the machine, never the run.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
    # tf.data under op determinism (--seed), once, as fit builds its pipeline
    "NodeDef mentions attribute use_unbounded_threadpool",
)


# The real stderr (a duplicate of descriptor 2) of each filter now in place, outermost
# first: a signal can cut a filter's ending short, and restore_stderr() then finishes it.
REAL_STDERR = []


@contextlib.contextmanager
def filtered_stderr(noise=STARTUP_NOISE):
    """Drop the known start-up lines from file descriptor 2; pass every other line on."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        try:
            REAL_STDERR.append(saved)  # before the redirection: a signal finds it listed
            os.dup2(captured.fileno(), 2)
            yield
        finally:
            restore_stderr(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not any(text in line for text in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


def restore_stderr(saved=None):
    """Point descriptor 2 back at the stderr the filter of `saved` (every filter, if None) found,
    closing the filters inside it. Safe to call again: the command line calls it before its last
    line, lest a Ctrl-C or SIGTERM that cut a filter's ending short send that line to its file."""
    if saved is not None and saved not in REAL_STDERR:
        return
    outermost = REAL_STDERR.index(saved) if saved is not None else 0
    if outermost >= len(REAL_STDERR):
        return
    sys.stderr.flush()
    os.dup2(REAL_STDERR[outermost], 2)
    while len(REAL_STDERR) > outermost:
        os.close(REAL_STDERR.pop())


@contextlib.contextmanager
def quiet_package_logging():
    """extra-keras-datasets turns the root logger to INFO; keep its citation, drop the rest."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)


@contextlib.contextmanager
def until_first_epoch_ends():
    """Filter stderr while fit starts up; yields the callback that ends the filter when the first
    epoch ends, so that anything later reaches the user at once. Not after the first step: a
    per-batch hook makes Keras hand every step's logs to Python, which cost the default run a
    quarter of its speed (bench/benchmark.py, docs/speed.md)."""
    with contextlib.ExitStack() as startup:
        startup.enter_context(filtered_stderr())
        yield keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: startup.close())


def not_a_retracing_hint(record):
    """TensorFlow's hint that a tf.function is traced often: --compare builds one model
    per run in one process, each traced anew, as it must be; the hint names no problem."""
    return "triggered tf.function retracing" not in record.getMessage()


with filtered_stderr():
    import keras  # noqa: E402,F401
    import tensorflow as tf  # noqa: E402,F401
tf.get_logger().addFilter(not_a_retracing_hint)
