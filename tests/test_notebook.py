"""model_batchnorm.ipynb (docs/notebook.md): copied alone into an empty folder, every
cell runs in a fresh kernel on small synthetic data in KMNIST's files in the Keras cache,
with no network, and shows the test line and its pictures; offline, its data cell says
what to do; and it is exactly what tools/make_notebook.py writes from the lesson's source."""
import json
import os
import re
import shutil
import subprocess
import sys

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

from conftest import ROOT, kmnist_in_cache

NOTEBOOK = ROOT / "model_batchnorm.ipynb"
# 500 images: 400 train (2 steps of 250 an epoch), 100 validate; 2 epochs, so 4 steps.
QUICK_SETTINGS = "no_epochs = 2\nshort_run_epochs = 1\nlimit = 500\nverbosity = 2"
TEST_LINE = re.compile(r"^Test loss: \S+ / Test accuracy: [01]\.\d+$", re.MULTILINE)
# What the script also filters or shows on stderr (machinery/quiet.py): TensorFlow's
# start-up lines, and extra-keras-datasets' citation request.
EXPECTED_ON_STDERR = ("All log messages before absl::InitializeLog() is called",
                      "oneDNN custom operations are on",
                      "Could not find cuda drivers on your machine",
                      "This TensorFlow binary is optimized to use available CPU instructions",
                      "To enable the following instructions:",
                      "failed call to cuInit",
                      "WARNING:root:Please cite the following paper",
                      "WARNING:root:Clanuwat, T., Bober-Irizar, M.")


def run_alone(folder, notebook, allow_errors=False):
    """Execute `notebook` in `folder` (its only file) in a fresh kernel of this Python,
    which has no path to this checkout and no matplotlib backend set, as a new Jupyter."""
    specs = folder.parent / f"{folder.name}-kernels"
    (specs / "notebook-test").mkdir(parents=True)
    (specs / "notebook-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "notebook test", "language": "python"}))
    manager = KernelManager(kernel_name="notebook-test",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    env = {name: value for name, value in os.environ.items()
           if name not in ("MPLBACKEND", "PYTHONPATH")}
    client = NotebookClient(notebook, km=manager, timeout=240, allow_errors=allow_errors,
                            resources={"metadata": {"path": str(folder)}})
    client.execute(env=env)
    return {cell.get("id"): cell for cell in notebook.cells}


def copied_alone(tmp_path_factory, name):
    folder = tmp_path_factory.mktemp(name)
    shutil.copy(NOTEBOOK, folder)
    assert [path.name for path in folder.iterdir()] == [NOTEBOOK.name]
    return folder, nbformat.read(folder / NOTEBOOK.name, as_version=4)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every cell of the notebook, run alone on 500 images, the quick settings injected
    after its settings cell (as papermill injects parameters)."""
    folder, notebook = copied_alone(tmp_path_factory, "notebook-alone")
    settings = [cell.get("id") for cell in notebook.cells].index("settings")
    notebook.cells.insert(settings + 1, nbformat.v4.new_code_cell(QUICK_SETTINGS,
                                                                  id="quick-settings"))
    with kmnist_in_cache(train=500, test=100):
        return run_alone(folder, notebook)


def text_of(cell, stream):
    """A cell's text on `stream`; on stdout with what it displayed as text (Keras'
    summary()), its terminal colours taken out."""
    text = "".join(
        output.get("text", "") if output.output_type == "stream" and output.name == stream
        else output.get("data", {}).get("text/plain", "") + "\n"
        if output.output_type == "display_data" and stream == "stdout" else ""
        for output in cell.outputs)
    return re.sub(r"\x1b\[[\d;]*m", "", text)


def test_notebook_runs_alone_every_cell_without_an_error(executed):
    code = [cell for cell in executed.values() if cell.cell_type == "code"]
    assert len(code) >= 14
    for cell in code:
        assert cell.execution_count is not None, cell.source
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.outputs


def test_notebook_installs_nothing_that_is_already_there(executed):
    assert text_of(executed["install"], "stdout").startswith("Nothing to install")


def test_notebook_prints_the_lessons_test_line(executed):
    assert TEST_LINE.search(text_of(executed["evaluate"], "stdout"))


def test_notebook_shows_summary_and_epochs(executed):
    assert "Total params: 433,034" in text_of(executed["build"], "stdout")
    assert text_of(executed["fit"], "stdout").count("val_accuracy") == 2
    assert text_of(executed["without-batchnorm"], "stdout").count("val_accuracy") == 1


@pytest.mark.parametrize("cell", ["plot", "batch-statistics", "comparison"])
def test_notebook_draws_its_pictures_inline(executed, cell):
    pictures = [o for o in executed[cell].outputs if "image/png" in o.get("data", {})]
    assert len(pictures) == 1


def test_notebook_tells_batch_against_moving_statistics_with_the_remedy(executed):
    text = text_of(executed["batch-statistics"], "stdout")
    assert re.search(r"Validation accuracy: [01]\.\d{4} with the moving statistics .*, "
                     r"[01]\.\d{4} with each batch's own", text)
    # 400 training images, batch 250, 2 epochs: 4 steps; 0.99 ** 4 = 0.96059601.
    assert "4 steps at momentum 0.99 leave 0.99^4 = 96.1% of their starting values" in text
    assert "BatchNormalization(momentum=0.9)" in text and "--recompute-bn-stats" in text


def test_notebook_prints_no_warning(executed):
    unexpected = [line for cell in executed.values() if cell.cell_type == "code"
                  for line in text_of(cell, "stderr").splitlines()
                  if line.strip() and not any(text in line for text in EXPECTED_ON_STDERR)]
    assert not unexpected


def test_notebook_offline_says_in_one_line_where_the_files_go(tmp_path_factory, empty_cache):
    folder, notebook = copied_alone(tmp_path_factory, "notebook-offline")
    notebook.cells = [cell for cell in notebook.cells
                      if cell.get("id") in ("settings", "install", "imports", "load")]
    cells = run_alone(folder, notebook, allow_errors=True)
    errors = [o for o in cells["load"].outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "RuntimeError"
    message = errors[0].evalue
    assert "\n" not in message and "Offline?" in message
    assert "kmnist-train-imgs.npz" in message and str(empty_cache["train_imgs"].parent) in message
    assert "as kmnist.npz_kmnist_train_imgs" in message


def test_committed_notebook_is_what_its_source_generates():
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "make_notebook.py"), "--check"],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_committed_notebook_has_the_lessons_settings_and_no_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    settings = next(cell for cell in notebook.cells if cell.get("id") == "settings")
    for value in ("batch_size = 250", "no_epochs = 25", "validation_split = 0.2",
                  "verbosity = 1", "no_classes = 10", "limit = None"):
        assert re.search(rf"^{re.escape(value)}$", settings.source, re.MULTILINE), value
    assert all(not cell.get("outputs") for cell in notebook.cells)
    assert NOTEBOOK.stat().st_size < 200_000
