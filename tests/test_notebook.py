"""model_batchnorm.ipynb (docs/notebook.md): copied alone into an empty folder, every
cell runs in a fresh kernel on small synthetic data in KMNIST's files in the Keras cache,
with no network, and shows the test line and its pictures; offline, its data cell says
what to do; and it is exactly what tools/make_notebook.py writes from the lesson's source."""
import contextlib
import copy
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
from nbclient.exceptions import CellExecutionError

from conftest import KERAS_HOME, ROOT, kmnist_in_cache
from machinery.quiet import STARTUP_NOISE

NOTEBOOK = ROOT / "model_batchnorm.ipynb"
# 500 images: 400 train (2 steps of 250 an epoch), 100 validate; 2 epochs, so 4 steps.
QUICK_SETTINGS = "no_epochs = 2\nshort_run_epochs = 1\nlimit = 500\nverbosity = 2"
TEST_LINE = re.compile(r"^Test loss: \S+ / Test accuracy: [01]\.\d+$", re.MULTILINE)
# What the script shows or filters on stderr too: TensorFlow's start-up lines (the
# script's filter, machinery/quiet.py) and extra-keras-datasets' citation request.
EXPECTED_ON_STDERR = (*STARTUP_NOISE, "WARNING:root:Please cite the following paper",
                      "WARNING:root:Clanuwat, T., Bober-Irizar, M.")


@contextlib.contextmanager
def fresh_kernel(folder, notebook):
    """A client for `notebook` in `folder` (its only file), with a fresh kernel of this
    Python that has no path to this checkout and no matplotlib backend set, as in a new
    Jupyter; the kernel is shut down afterwards."""
    specs = folder.parent / f"{folder.name}-kernels"
    (specs / "notebook-test").mkdir(parents=True)
    (specs / "notebook-test" / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "notebook test", "language": "python"}))
    manager = KernelManager(kernel_name="notebook-test",
                            kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(specs)]))
    env = {name: value for name, value in os.environ.items()
           if name not in ("MPLBACKEND", "PYTHONPATH")}
    client = NotebookClient(notebook, km=manager, timeout=240,
                            resources={"metadata": {"path": str(folder)}})
    with client.setup_kernel(env=env, cleanup_kc=True):
        yield client


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The notebook copied alone into an empty folder, its quick settings injected after
    its settings cell (as papermill injects parameters), every cell run in order. Its load
    cell runs first with an empty Keras cache and no network, then, as its offline line
    says, again once the files are in the cache (500 synthetic images). The cells by id,
    and that first, offline run of the load cell."""
    folder = tmp_path_factory.mktemp("notebook-alone")
    shutil.copy(NOTEBOOK, folder)
    assert [path.name for path in folder.iterdir()] == [NOTEBOOK.name]
    notebook = nbformat.read(folder / NOTEBOOK.name, as_version=4)
    settings = [cell.get("id") for cell in notebook.cells].index("settings")
    notebook.cells.insert(settings + 1, nbformat.v4.new_code_cell(QUICK_SETTINGS,
                                                                  id="quick-settings"))
    for path in (KERAS_HOME / "datasets").glob("kmnist.npz_*"):
        path.unlink()
    offline = None
    with fresh_kernel(folder, notebook) as client:
        for index, cell in enumerate(notebook.cells):
            if cell.get("id") == "load":
                offline = copy.deepcopy(cell)
                with contextlib.suppress(CellExecutionError):
                    client.execute_cell(offline, index)
                with kmnist_in_cache(train=500, test=100):
                    client.execute_cell(cell, index)
            elif cell.cell_type == "code":
                client.execute_cell(cell, index)
    return {cell.get("id"): cell for cell in notebook.cells}, offline


@pytest.fixture(scope="module")
def executed(run):
    return run[0]


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


def test_notebook_offline_says_in_one_line_where_the_files_go(run):
    offline = run[1]
    errors = [o for o in offline.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "RuntimeError"
    message = errors[0].evalue
    assert "\n" not in message and "Offline?" in message
    for name in ("kmnist-train-imgs.npz", "kmnist-test-labels.npz", str(KERAS_HOME / "datasets"),
                 "as kmnist.npz_kmnist_train_imgs", "kmnist.npz_kmnist_test_labels"):
        assert name in message, name


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
