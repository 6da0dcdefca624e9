"""plot_history.py's command line: --title goes above the panels of the picture it
writes; the file stands alone (copied into an empty folder, its command line works
and keeps its one-line errors); the lesson's run shows the helper's errors as one line."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.image import imread

import machinery.cli
import plot_history as ph
from conftest import ROOT

HISTORY = {"accuracy": [0.5, 0.7], "loss": [1.2, 0.8],
           "val_accuracy": [0.4, 0.6], "val_loss": [1.4, 1.0]}
TITLE = "Synthetic data, not KMNIST"


@pytest.fixture
def histories(tmp_path):
    paths = []
    for name in ("a.json", "b.json"):
        paths.append(tmp_path / name)
        paths[-1].write_text(json.dumps(HISTORY))
    return paths


@pytest.fixture
def drawn(monkeypatch):
    """The figures the command line draws, by the function that drew them."""
    figures = {}
    for name in ("plot_history", "plot_comparison"):
        def keep(*args, _draw=getattr(ph, name), _name=name, **kwargs):
            figures[_name] = _draw(*args, **kwargs)
            return figures[_name]
        monkeypatch.setattr(ph, name, keep)
    return figures


@pytest.mark.parametrize("overlay", [False, True], ids=["one file", "overlay"])
def test_title_is_drawn_above_the_panels(overlay, histories, drawn, tmp_path, capsys):
    files = [str(p) for p in (histories if overlay else histories[:1])]
    labels = ["--labels", "BN", "no BN"] if overlay else []
    titled, plain = tmp_path / "titled.png", tmp_path / "plain.png"
    assert ph.command_line([*files, *labels, "--title", TITLE, "-o", str(titled)]) == 0
    assert capsys.readouterr().out == f"Wrote {titled}\n"
    figure = drawn["plot_comparison" if overlay else "plot_history"]
    assert figure.get_suptitle() == TITLE
    assert ph.command_line([*files, *labels, "-o", str(plain)]) == 0
    assert figure is not drawn["plot_comparison" if overlay else "plot_history"]
    assert drawn["plot_comparison" if overlay else "plot_history"].get_suptitle() == ""
    # The title is in the written picture: the two files differ, in their top rows.
    with_title, without = imread(titled), imread(plain)
    assert with_title.shape == without.shape
    rows_differing = np.flatnonzero(np.any(with_title != without, axis=(1, 2)))
    assert rows_differing.size and rows_differing[0] < with_title.shape[0] * 0.1


def test_plot_history_alone_in_a_folder_runs_its_help_and_one_line_errors(tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(ROOT / "plot_history.py", alone)

    def command(*args):
        # -I: only the copied file's folder is on sys.path, not this project.
        return subprocess.run([sys.executable, "-I", "plot_history.py", *args], cwd=alone,
                              capture_output=True, text=True, timeout=120)

    helped = command("--help")  # in a folder holding nothing but the file
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith("usage: plot_history.py") and "--labels" in helped.stdout
    (alone / "history.json").write_text(json.dumps(HISTORY))
    drawn = command("history.json", "--title", TITLE)
    assert drawn.returncode == 0, drawn.stderr
    assert imread(alone / "history.png").shape[0] > 100
    for args, code, line in [
            (["missing.json"], 1, "error: missing.json does not exist: give the path of a "
                                  "history.json"),
            (["history.json", "--colour", "red"], 2,
             "error: unrecognized arguments: --colour red (see --help)")]:
        failed = command(*args)
        assert (failed.returncode, failed.stderr) == (code, line + "\n")
    assert sorted(p.name for p in alone.iterdir()) == ["history.json", "history.png",
                                                       "plot_history.py"]


def test_the_lessons_command_line_shows_a_helpers_error_as_one_line(capsys):
    # plot_history's errors are not the project's ScriptError (it stands alone); the
    # script's command line still tells them in one line, exit code 1.
    code = machinery.cli.run(lambda argv: ph.load_history({"loss": [1.0]}))
    assert code == 1
    assert capsys.readouterr().err == ("error: the history has no 'accuracy' series (it has "
                                       "['loss']): it must come from fit() with "
                                       "metrics=['accuracy']\n")
