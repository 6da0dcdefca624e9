"""A signal between two files: SIGTERM or Ctrl-C sent at any moment around an
epoch's end stops the run where the log and the backup agree. Each time, the message,
the files and the rerun must tell the same story: the N epochs of the message are the N
the backup holds, the N rows of history.csv and history.json, and the N the rerun of
the same command resumes from."""
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from machinery import backup
from testdata import synthetic
from conftest import ROOT, as_from_a_terminal, cli

# 800 training images at batch 50: 16 steps an epoch, an epoch well under a second.
FLAGS = ["--epochs", "3", "--batch-size", "50", "--verbose", "2", "--no-plot"]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("signal-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=1000, test=100))
    return folder


def command(data, out):
    return ["--data-dir", str(data), "--output-dir", str(out), *FLAGS]


def log_rows(out):
    path = out / "history.csv"
    return path.read_text().splitlines()[1:] if path.exists() else []


def backed_up(out):
    metadata = out / "backup" / "training_metadata.json"
    return json.loads(metadata.read_text())["epoch"] if metadata.exists() else 0


def stated_epochs(stderr, what):
    """N in the one line '<what> after N completed epoch(s)...'; the line must end as the
    docs' table says for N >= 1, and say the run starts over for N = 0."""
    lines = [line for line in stderr.splitlines() if line.startswith(what + " after ")]
    assert len(lines) == 1, stderr
    epochs = int(lines[0][len(what + " after "):].split(" ")[0])
    ending = ("Run the same command again to resume from the backup." if epochs else
              "Run the same command again to start at epoch 1 (no epoch was completed).")
    assert lines[0].endswith(ending), lines[0]
    return epochs


def assert_files_agree(out, epochs):
    """The backup, the log and history.json all hold the stated epochs, no more, no fewer."""
    assert backed_up(out) == epochs
    assert [int(row.split(",")[0]) for row in log_rows(out)] == list(range(epochs))
    history = out / "history.json"
    if epochs:
        assert all(len(v) == epochs for v in json.loads(history.read_text()).values())
    else:
        assert not history.exists()


def assert_rerun_agrees(data, out, epochs, capsys):
    """The same command again: resumes from the stated epochs and ends with all three."""
    capsys.readouterr()
    assert cli(command(data, out)) == 0
    stdout = capsys.readouterr().out
    resuming = f"Resuming from the backup in {out}/backup: {epochs} epoch(s) already done"
    assert (resuming in stdout) == (epochs > 0), stdout
    ran = [line for line in stdout.splitlines() if line.startswith("Epoch ")]
    assert ran == [f"Epoch {n}/3" for n in range(epochs + 1, 4)], stdout
    assert [int(row.split(",")[0]) for row in log_rows(out)] == [0, 1, 2]
    assert not (out / "backup").exists()


def start(data, out):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), *command(data, out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=as_from_a_terminal)


def wait_for_first_row(process, out, timeout=120):
    deadline = time.monotonic() + timeout
    while not log_rows(out):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"no epoch was logged: {process.communicate()}")
        time.sleep(0.0005)


# The held-out check: at 0 to 10 ms after the first row appeared the message
# promised an epoch the backup did not hold yet; these delays straddle the backup.
@pytest.mark.slow  # a training process per delay: .ci/run's slow phase
@pytest.mark.parametrize("delay_ms", [0, 2, 5, 10, 20, 50])
def test_sigterm_just_after_an_epochs_row_leaves_message_files_and_rerun_agreeing(
        delay_ms, tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    process = start(tiny_data, out)
    wait_for_first_row(process, out)
    time.sleep(delay_ms / 1000)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr
    epochs = stated_epochs(stderr, "Terminated (SIGTERM)")
    assert epochs >= 1  # the row was there: its epoch is in the backup too
    assert_files_agree(out, epochs)
    assert_rerun_agrees(tiny_data, out, epochs, capsys)


def kill_self(signal_number):
    os.kill(os.getpid(), signal_number)


def after(method, signal_number, epoch):
    """`method`, then the signal to this very process at the end of epoch index `epoch`."""
    def wrapped(self, epoch_index, *args, **kwargs):
        method(self, epoch_index, *args, **kwargs)
        if epoch_index == epoch:
            kill_self(signal_number)
    return wrapped


# Exact points, in-process (the signal to the test's own process; its handler runs at
# once): inside epoch 1 and epoch 2, right after epoch 1's row, right after its backup.
POINTS = {
    "step 5 of epoch 1": ("on_train_batch_end", 4, 0),
    "step 5 of epoch 2": ("on_train_batch_end", 4, 1),
    "after epoch 1's row": ("csv", 0, 1),
    "after epoch 1's backup": ("backup", 0, 1),
}


# SIGTERM at every point; Ctrl-C (SIGINT) where it differs from SIGTERM's path the most:
# inside an epoch, and in the instant between a row and its backup.
CASES = [(point, "SIGTERM") for point in POINTS] + [
    ("step 5 of epoch 2", "SIGINT"), ("after epoch 1's row", "SIGINT")]


@pytest.mark.parametrize("point, signal_name", CASES, ids=[f"{p}-{s}" for p, s in CASES])
def test_a_signal_at_each_point_of_an_epoch_stops_where_log_and_backup_agree(
        point, signal_name, tiny_data, tmp_path, capsys, monkeypatch):
    signal_number = getattr(signal, signal_name)
    hook, index, expected = POINTS[point]
    if hook == "csv":
        monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_end",
                            after(keras.callbacks.CSVLogger.on_epoch_end, signal_number, index))
    elif hook == "backup":
        monkeypatch.setattr(backup.Backup, "on_epoch_end",
                            after(backup.Backup.on_epoch_end, signal_number, index))
    else:
        state = {"epoch": -1}

        def on_epoch_begin(self, epoch, logs=None):
            state["epoch"] = epoch

        def on_train_batch_end(self, batch, logs=None):
            if batch == index and state["epoch"] == expected:
                kill_self(signal_number)
        monkeypatch.setattr(keras.callbacks.CSVLogger, "on_epoch_begin", on_epoch_begin)
        monkeypatch.setattr(keras.callbacks.CSVLogger, "on_train_batch_end", on_train_batch_end)
    # Python turns SIGINT into KeyboardInterrupt only where it is not ignored (xdist).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        code = cli(command(tiny_data, tmp_path / "run"))
    finally:
        signal.signal(signal.SIGINT, previous)
    stderr = capsys.readouterr().err
    assert code == {"SIGTERM": 143, "SIGINT": 130}[signal_name], stderr
    what = {"SIGTERM": "Terminated (SIGTERM)", "SIGINT": "Interrupted"}[signal_name]
    assert stated_epochs(stderr, what) == expected  # the hand count of each point
    monkeypatch.undo()
    assert_files_agree(tmp_path / "run", expected)
    assert_rerun_agrees(tiny_data, tmp_path / "run", expected, capsys)


# TensorFlow's C++ can catch and drop the exception a signal's handler raises inside it
# (seen: a SIGTERM during the workers' agreement printed a SystemError, and the worker
# trained on and exited 0). Swallowed at each point (tests/stop_at.py's `swallow:`), the
# signal still ends the run: at the end of the epoch it landed in, before training, or
# once the run is done, never with exit code 0.
SWALLOWED = {
    "during epoch 1": ("swallow:keras.callbacks.CSVLogger.on_epoch_begin", 1),
    "before training": ("swallow:machinery.resume.agreed_epoch", None),
    "after training": ("swallow:machinery.batchnorm_stats.Monitor.on_train_end", None),
}


@pytest.mark.parametrize("point", SWALLOWED)
def test_a_sigterm_that_tensorflow_swallows_still_stops_the_run_with_143(
        point, tiny_data, tmp_path, capsys):
    import stop_at
    where, epochs = SWALLOWED[point]
    _, undo = stop_at.install(signal.SIGTERM, where)
    try:
        code = cli(command(tiny_data, tmp_path / "run"))
    finally:
        undo()
    stderr = capsys.readouterr().err
    assert f"stop_at: dropped {int(signal.SIGTERM)}" in stderr  # it was swallowed
    assert code == 143, stderr
    if epochs is None:
        assert stderr.splitlines()[-1] == (
            "Terminated (SIGTERM) before training started or after it ended; the backup, "
            "if any, is kept: run the same command again."), stderr
        assert (tmp_path / "run" / "run.json").exists() == (point == "after training")
    else:
        assert stated_epochs(stderr, "Terminated (SIGTERM)") == epochs
        assert_files_agree(tmp_path / "run", epochs)


def test_a_run_after_an_interrupted_one_in_the_same_process_trains_to_the_end(
        tiny_data, tmp_path):
    """main() called again in one process (a notebook, a script) after a Ctrl-C: the
    first run's signal, whose exception it handled, does not stop the second."""
    import model_batchnorm as mb
    import stop_at
    from machinery.errors import Interrupted
    _, undo = stop_at.install(signal.SIGINT, "keras.callbacks.CSVLogger.on_epoch_end")
    try:
        with pytest.raises(Interrupted, match="after 1 completed epoch"):
            mb.main(command(tiny_data, tmp_path / "first"))
    finally:
        undo()
    try:
        result = mb.main(command(tiny_data, tmp_path / "second"))
    except KeyboardInterrupt:  # pytest would take it for the user's own and stop
        pytest.fail("the first run's Ctrl-C stopped the second run")
    assert len(result["history"]["loss"]) == 3


# Ctrl-C landing inside TensorFlow's iterator set-up, between two lines of a device
# scope's __enter__ (as a real signal can): the scope around it then fails to exit in
# the KeyboardInterrupt's place. Armed at the end of training's first epoch or of
# training itself, it fires as the next iterator is made (the next epoch's, evaluate's).
INSIDE_ITERATOR_SET_UP = """
import sys
sys.path.insert(0, {root!r})
import model_batchnorm as mb
from machinery import backup, batchnorm_stats, cli
from tensorflow.python.eager import context
set_device, armed = context.Context._set_device, []

def landing_inside_enter(self, *args, **kwargs):
    set_device(self, *args, **kwargs)
    caller, outer = sys._getframe(1).f_code.co_name, sys._getframe(2).f_code.co_name
    if armed and caller == "__enter__" and outer == "_create_iterator":
        armed.clear()
        raise KeyboardInterrupt

def arming(original):
    def armed_after(*args, **kwargs):
        original(*args, **kwargs)
        armed.append(1)
    return armed_after

context.Context._set_device = landing_inside_enter
owner, name = {where}
setattr(owner, name, arming(getattr(owner, name)))
sys.exit(cli.run(mb.main, {argv!r}))
"""


@pytest.mark.parametrize("where, line", [
    ("(backup.Backup, 'on_epoch_end')", "Interrupted after 1 completed epoch(s)"),
    ("(batchnorm_stats.Monitor, 'on_train_end')", "Interrupted before training started or "
                                                  "after it ended"),
], ids=["during training", "after training"])
def test_ctrl_c_inside_tensorflows_iterator_set_up_is_still_ctrl_c(module_data_dir, tmp_path,
                                                                   where, line):
    argv = ["--epochs", "2", "--data-dir", str(module_data_dir), "--output-dir",
            str(tmp_path / "run"), "--no-plot", "--verbose", "0"]
    script = INSIDE_ITERATOR_SET_UP.format(root=str(ROOT), where=where, argv=argv)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=ROOT, timeout=240)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().startswith(line) and "Traceback" not in done.stderr
