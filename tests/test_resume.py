"""A run that is killed or interrupted loses nothing: it resumes, and keeps its history."""
import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import model_batchnorm as mb
import stop_at
from testdata import synthetic
from conftest import (ROOT, as_from_a_terminal, cli, error_lines, run_script,
                      stopped_after_first_epoch)
from test_readme_errors import assert_whole_line, readme_row

# Enough steps per epoch (48 of 50 images) that a signal lands inside an epoch.
SLOW = ["--batch-size", "50", "--verbose", "2"]


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=3000, test=200))
    return folder


def start(*args):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=as_from_a_terminal,
    )


def epochs_logged(out):
    return [int(row.split(",")[0]) for row in (out / "history.csv").read_text().splitlines()[1:]]


def test_killed_run_resumes_where_it_stopped(slow_data, tmp_path):
    """SIGKILL sent by the run to itself as epoch 1's backup is written (tests/stop_at.py):
    a kill that cannot come after the run has ended."""
    out = tmp_path / "run"
    argv = ["--epochs", "3", "--data-dir", slow_data, "--output-dir", out, *SLOW]
    killed = subprocess.run(
        stop_at.command("SIGKILL", "after:machinery.backup.Backup.on_epoch_end", *argv),
        capture_output=True, cwd=ROOT, timeout=240)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done_before = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    assert done_before == 1

    again = run_script(*argv)
    assert again.returncode == 0, again.stderr
    assert f"{done_before} epoch(s) already done" in again.stdout
    epochs_run = [line for line in again.stdout.splitlines() if line.startswith("Epoch ")]
    assert epochs_run[0] == f"Epoch {done_before + 1}/3"  # the remaining epochs only
    assert len(epochs_run) == 3 - done_before
    history = json.loads((out / "history.json").read_text())
    assert all(len(values) == 3 for values in history.values())
    assert epochs_logged(out) == [0, 1, 2]
    assert not (out / "backup").exists()


@pytest.fixture(scope="module")
def interrupted(slow_data, tmp_path_factory):
    """A run stopped with Ctrl-C (SIGINT) after at least one epoch."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    process = start("--epochs", "30", "--data-dir", slow_data, "--output-dir", out, *SLOW)
    return (out, *stopped_after_first_epoch(process, out, signal.SIGINT))


@pytest.fixture
def interrupted_copy(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted[0], out)
    return out


def test_ctrl_c_exits_130_and_keeps_the_completed_epochs(interrupted):
    out, code, stdout, stderr = interrupted
    assert code == 130
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    completed = len(epochs_logged(out))
    assert completed >= 1
    lines = [line for line in stderr.splitlines() if line.startswith("Interrupted")]
    assert len(lines) == 1, stderr
    messages, exit_code = readme_row("Ctrl-C during training")
    assert code == exit_code
    assert_whole_line(messages[0], lines[0],
                      **{"after 3 ": f"after {completed} ", "outputs/": f"{out}/"})
    history = json.loads((out / "history.json").read_text())
    assert all(len(values) == completed for values in history.values())
    assert (out / "training_history.png").stat().st_size > 0
    assert (out / "backup" / "training_metadata.json").exists()
    assert not (out / "model.keras").exists()


def test_rerun_after_ctrl_c_resumes_and_history_covers_all_epochs(
        interrupted_copy, slow_data, capsys):
    done = json.loads((interrupted_copy / "backup" / "training_metadata.json").read_text())["epoch"]
    result = mb.main(["--epochs", str(done + 1), "--data-dir", str(slow_data),
                      "--output-dir", str(interrupted_copy), "--no-plot", *SLOW])
    assert f"{done} epoch(s) already done" in capsys.readouterr().out
    assert result["resumed_from_epoch"] == done
    assert len(result["history"]["loss"]) == done + 1
    assert epochs_logged(interrupted_copy) == list(range(done + 1))


def test_a_logged_epoch_the_backup_lacks_is_dropped_on_resume(
        interrupted_copy, slow_data, capsys):
    # A kill after CSVLogger wrote an epoch's row but before BackupAndRestore saved it
    # leaves a log one row longer than the backup: that row must go, not be kept twice.
    done = json.loads((interrupted_copy / "backup" / "training_metadata.json").read_text())["epoch"]
    log = interrupted_copy / "history.csv"
    rows = log.read_text().splitlines()
    assert len(rows) == 1 + done  # the header and one row per backed-up epoch
    header = rows[0].split(",")
    assert header[0] == "epoch"
    orphan = ",".join([str(done)] + ["99.0"] * (len(header) - 1))
    log.write_text("\n".join(rows + [orphan]) + "\n")

    result = mb.main(["--epochs", str(done + 1), "--data-dir", str(slow_data),
                      "--output-dir", str(interrupted_copy), "--no-plot", *SLOW])
    assert f"{done} epoch(s) already done" in capsys.readouterr().out
    after = log.read_text().splitlines()
    assert after[: 1 + done] == rows  # the backed-up epochs' rows, unchanged, in order
    assert epochs_logged(interrupted_copy) == list(range(done + 1))
    assert "99.0" not in after[-1].split(",")
    history = json.loads((interrupted_copy / "history.json").read_text())
    logged_loss = [float(row.split(",")[header.index("loss")]) for row in rows[1:]]
    assert history["loss"][:done] == logged_loss and len(history["loss"]) == done + 1
    assert 99.0 not in history["loss"] and result["resumed_from_epoch"] == done


def snapshot(folder):
    """Every file under `folder` with its bytes and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def k49_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("k49-data")
    synthetic.write(synthetic.folder_paths(folder, "k49"),
                    synthetic.make_arrays(train=3000, test=200, classes=49))
    return folder


# The interrupted run used kmnist, BatchNormalization, --batch-size 50, the default
# --validation-split 0.2 and no --limit. Each case changes one of them.
CHANGED = {
    "dataset": (["--dataset", "k49"], "dataset 'kmnist' -> 'k49'"),
    "variant": (["--no-batchnorm"], "batchnorm True -> False"),
    "batch size": (["--batch-size", "100"], "batch_size 50 -> 100"),
    "validation split": (["--validation-split", "0.3"], "validation_split 0.2 -> 0.3"),
    "limit": (["--limit", "2000"], "limit None -> 2000"),
}


@pytest.mark.parametrize("change", CHANGED)
def test_resuming_a_different_configuration_is_refused_and_touches_nothing(
        change, interrupted_copy, slow_data, k49_data, capsys):
    flags, difference = CHANGED[change]
    data = k49_data if change == "dataset" else slow_data
    before = snapshot(interrupted_copy)
    argv = ["--epochs", "30", "--data-dir", str(data), "--output-dir", str(interrupted_copy),
            *SLOW, *flags]  # later flags win: --batch-size 100 replaces SLOW's 50
    assert cli(argv) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    # The README's line, with this run's folder and this key's old and new values.
    messages, exit_code = readme_row("a backup of a different configuration")
    assert exit_code == 1
    assert_whole_line(messages[0], lines[0],
                      **{"outputs": interrupted_copy, "batch_size 50 -> 100": difference})
    assert snapshot(interrupted_copy) == before  # nothing touched


def test_restart_ignores_the_backup(interrupted_copy, slow_data, capsys):
    result = mb.main(["--epochs", "1", "--restart", "--data-dir", str(slow_data),
                      "--output-dir", str(interrupted_copy), "--no-plot", *SLOW])
    assert "Resuming" not in capsys.readouterr().out
    assert result["resumed_from_epoch"] == 0 and len(result["history"]["loss"]) == 1
    assert epochs_logged(interrupted_copy) == [0]


def test_k49_trains_a_49_way_model_and_reports_balanced_accuracy(tmp_path, capsys):
    folder = tmp_path / "k49"
    arrays = synthetic.make_arrays(train=600, test=150, classes=49)
    synthetic.write(synthetic.folder_paths(folder, "k49"), arrays)
    result = mb.main(["--dataset", "k49", "--epochs", "1", "--data-dir", str(folder),
                      "--output-dir", str(tmp_path / "out"), "--no-plot"])
    model = result["model"]
    assert model.layers[-1].units == 49
    predicted = model.predict(mb.preprocess(arrays["test_imgs"]), verbose=0).argmax(axis=1)
    # Balanced accuracy, computed here: the mean over classes of each class's accuracy.
    labels = arrays["test_labels"]
    per_class = [np.sum((predicted == c) & (labels == c)) / np.sum(labels == c)
                 for c in set(labels.tolist())]
    expected = sum(per_class) / len(per_class)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["dataset"] == "k49"
    assert run["test_balanced_accuracy"] == pytest.approx(expected)
    assert f"Test balanced accuracy: {run['test_balanced_accuracy']}" in capsys.readouterr().out
    assert np.isclose(run["test_accuracy"], np.mean(predicted == arrays["test_labels"]))
