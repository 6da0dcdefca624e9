"""A run that is killed or interrupted loses nothing: it resumes, and keeps its history."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import model_batchnorm as mb
from machinery import synthetic
from conftest import ROOT, cli, error_lines, run_script

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
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for_first_backup(process, out, timeout=180):
    """Return once the backup holds a completed epoch; fail if the run ends first."""
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if metadata.exists():
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no epoch completed in time")


def epochs_logged(out):
    return [int(row.split(",")[0]) for row in (out / "history.csv").read_text().splitlines()[1:]]


def test_killed_run_resumes_where_it_stopped(slow_data, tmp_path):
    out = tmp_path / "run"
    argv = ["--epochs", "3", "--data-dir", slow_data, "--output-dir", out, *SLOW]
    process = start(*argv)
    wait_for_first_backup(process, out)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=60)
    done_before = json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]
    assert 1 <= done_before < 3

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
    wait_for_first_backup(process, out)
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    return out, process.returncode, stdout, stderr


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
    assert f"Interrupted after {completed} completed epoch(s)" in stderr
    assert str(out / "history.json") in stderr
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


def test_resuming_with_another_batch_size_is_refused(interrupted_copy, slow_data, capsys):
    before = sorted(p.name for p in interrupted_copy.rglob("*"))
    code = cli(["--epochs", "30", "--data-dir", str(slow_data), "--output-dir",
                   str(interrupted_copy), "--batch-size", "100"])
    assert code == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1
    assert "batch_size 50 -> 100" in lines[0] and "--restart" in lines[0]
    assert sorted(p.name for p in interrupted_copy.rglob("*")) == before  # nothing touched


def test_resuming_without_batchnorm_is_refused(interrupted_copy, slow_data, capsys):
    code = cli(["--data-dir", str(slow_data), "--output-dir", str(interrupted_copy),
                   "--no-batchnorm", *SLOW])
    assert code == 1
    assert "batchnorm True -> False" in error_lines(capsys.readouterr().err)[0]


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
