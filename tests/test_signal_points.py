"""A signal at a known point, sent by the run to itself (tests/stop_at.py), never raced
against a timer: before training (the data loading), after it (the evaluation, the
saving), and at every eighth traced line of Python from an epoch's end to the next epoch's
first step. Each time: exit code 143 or 130, and exactly one line on the real stderr
(file descriptor 2, as a terminal shows it) whose epochs are those the files hold."""
import contextlib
import json
import signal

import pytest

import stop_at
from conftest import cli
from test_readme_errors import readme_row
from test_signals import assert_files_agree, stated_epochs, tiny_data  # noqa: F401

FLAGS = ["--epochs", "2", "--batch-size", "50", "--verbose", "0", "--no-plot"]
# Where the window of the sweep starts: the first callback of an epoch's end after the
# per-epoch statistics, which come first and only compute.
EPOCH_END = "machinery.callbacks.EpochTimer.on_epoch_end"
STRIDE, SHARDS = 8, 4  # every 8th line (about 60 runs), in 4 tests that each stay within their timeout


def run_stopped(data, out, signal_number, where, lines=None):
    """The run, in-process, with the signal sent at `where` (stop_at's notation); its
    exit code and the LineCounter (None without `lines`)."""
    counter, undo = stop_at.install(signal_number, where, lines)
    # Python turns SIGINT into KeyboardInterrupt only where it is not ignored (xdist).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    # sys.stderr writing to file descriptor 2, as in a process of its own (pytest's capfd
    # gives it a file of its own, which no redirection of descriptor 2 would reach).
    descriptor_2 = open(2, "w", closefd=False)
    try:
        with contextlib.redirect_stderr(descriptor_2):
            code = cli(["--data-dir", str(data), "--output-dir", str(out), *FLAGS])
    finally:
        descriptor_2.flush()
        signal.signal(signal.SIGINT, previous)
        undo()
    return code, counter


# Points before training and after it, by the function running when the signal comes.
OUTSIDE = {
    "data loading": ("machinery.data.load", False),
    "evaluation": ("model_batchnorm.test", True),
    "saving the model": ("machinery.record.save_model", True),
}


@pytest.mark.parametrize("point", OUTSIDE)
@pytest.mark.parametrize("signal_name, code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_before_or_after_training_is_its_exit_code_and_one_line(
        point, signal_name, code, tiny_data, tmp_path, capfd):  # noqa: F811
    where, trained = OUTSIDE[point]
    out = tmp_path / "run"
    assert run_stopped(tiny_data, out, getattr(signal, signal_name), where)[0] == code
    lines = [line for line in capfd.readouterr().err.splitlines() if line]
    (line,), exit_code = (readme_row("Ctrl-C before training or after it")
                          if signal_name == "SIGINT" else
                          readme_row("SIGTERM before training or after it"))
    assert exit_code == code
    assert lines == [line]
    assert not (out / "model.keras").exists()
    if trained:  # the backup holds both epochs: the same command only writes the outputs
        assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 2
        assert cli(["--data-dir", str(tiny_data), "--output-dir", str(out), *FLAGS]) == 0
        assert "2 epoch(s) already done" in capfd.readouterr().out
        assert (out / "model.keras").exists() and not (out / "backup").exists()


@pytest.fixture(scope="module")
def window(tiny_data, tmp_path_factory):  # noqa: F811
    """How many traced lines run from the first epoch's end to the second's first step."""
    code, counter = run_stopped(tiny_data, tmp_path_factory.mktemp("count") / "run",
                                signal.SIGTERM, EPOCH_END, lines=10 ** 9)
    assert code == 0 and counter.count > 100, counter.count
    return counter.count


@pytest.mark.slow  # about 60 runs in all: .ci/run's slow phase
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("shard", range(SHARDS))
def test_sigterm_at_every_few_lines_of_an_epochs_end_is_exit_143_and_one_agreeing_line(
        shard, window, tiny_data, tmp_path, capfd):  # noqa: F811
    failures = []
    for line in range(shard * STRIDE, window, STRIDE * SHARDS):
        out = tmp_path / f"line-{line}"
        code, counter = run_stopped(tiny_data, out, signal.SIGTERM, EPOCH_END, lines=line)
        stderr = capfd.readouterr().err
        try:
            assert counter.fired and code == 143, (code, stderr)
            epochs = stated_epochs(stderr, "Terminated (SIGTERM)")
            assert epochs in (0, 1)  # before the first row, or after its backup
            assert_files_agree(out, epochs)
        except AssertionError as err:
            failures.append(f"line {line} ({counter.where}): {err}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("call", [1, 2, 3, 4])
def test_sigterm_as_a_stderr_filter_ends_still_shows_the_one_line(call, tiny_data, tmp_path,
                                                                   capfd):  # noqa: F811
    """The run filters TensorFlow's start-up lines four times (the devices, fit's start
    up to the first epoch's end, the evaluation, the diagnosis); SIGTERM just before a
    filter gives stderr back must not send the last line into the filter's file."""
    out = tmp_path / "run"
    where = f"machinery.quiet.restore_stderr#{call}"
    assert run_stopped(tiny_data, out, signal.SIGTERM, where)[0] == 143
    lines = [line for line in capfd.readouterr().err.splitlines() if line]
    assert len(lines) == 1, lines
    if " after it ended" not in lines[0]:
        assert_files_agree(out, stated_epochs(lines[0], "Terminated (SIGTERM)"))
