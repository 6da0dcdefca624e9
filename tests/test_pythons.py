"""A subset `.ci/run` runs on the oldest and the newest Python the README names (3.10
and 3.13) beside the main suite, each in a fresh virtual environment installed from
tests/requirements.lock: the install, a smoke run with its pictures, a stopped run
resumed, and the plotting command. Marked `pythons`, which pytest.ini keeps out of the
main suite. Imports no TensorFlow and nothing the tests alone install (mlxtend)."""
import json
import subprocess
import sys

import pytest

from testdata import synthetic
import stop_at
from conftest import ROOT, as_from_a_terminal, run_script

pytestmark = pytest.mark.pythons

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# What the product imports from requirements.txt, by the names it imports them by.
PRODUCT_IMPORTS = ["tensorflow", "keras", "numpy", "matplotlib", "PIL", "extra_keras_datasets",
                   "filelock"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pythons-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=1500, test=100))
    return folder


def test_this_python_is_one_the_readme_names_and_the_install_is_complete():
    assert (3, 10) <= sys.version_info[:2] <= (3, 13)
    imported = subprocess.run(
        [sys.executable, "-c", f"import {', '.join(PRODUCT_IMPORTS)}"], capture_output=True,
        text=True, cwd=ROOT, timeout=120)
    assert imported.returncode == 0, imported.stderr


def test_a_smoke_run_writes_its_files_and_pictures_and_the_plot_command_draws(data, tmp_path):
    out = tmp_path / "out"
    done = run_script("--epochs", "2", "--limit", "600", "--batch-size", "100",
                      "--data-dir", data, "--output-dir", out)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("Test loss: ")]
    history = json.loads((out / "history.json").read_text())
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(values) == 2 for values in history.values())
    for picture in ("training_history.png", "predictions.png", "confusion_matrix.png",
                    "batchnorm_statistics.png"):
        assert (out / picture).read_bytes()[:8] == PNG_SIGNATURE, picture
    drawn = run_script(out / "history.json", "-o", tmp_path / "curves.png",
                       script="plot_history.py")
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


def test_a_run_stopped_by_sigterm_resumes_from_its_backup(data, tmp_path):
    """SIGTERM sent by the run to itself as epoch 1's backup is written (tests/stop_at.py):
    a signal that cannot come after the run has ended."""
    out = tmp_path / "out"
    argv = ["--epochs", "3", "--batch-size", "50", "--verbose", "2", "--no-plot",
            "--data-dir", str(data), "--output-dir", str(out)]
    done = subprocess.run(
        stop_at.command("SIGTERM", "after:machinery.backup.Backup.on_epoch_end", *argv),
        capture_output=True, text=True, cwd=ROOT, timeout=240, preexec_fn=as_from_a_terminal)
    assert done.returncode == 143, done.stderr
    assert json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"] == 1
    assert "Terminated (SIGTERM) after 1 completed epoch(s)" in done.stderr
    again = run_script(*argv)
    assert again.returncode == 0, again.stderr
    assert "1 epoch(s) already done" in again.stdout
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 3
