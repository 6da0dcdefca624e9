"""Write model_batchnorm.ipynb, the lesson as a notebook, from the lesson's own source.

    python tools/make_notebook.py            # write model_batchnorm.ipynb
    python tools/make_notebook.py --check    # exit 1 when the notebook differs from its source

It runs alone (Colab, a fresh Jupyter), so its cells hold code, never imports of this
project: the lesson's configuration, preprocess, build_model, compile_model and test line
copied from model_batchnorm.py and the plotting helper from plot_history.py, each found
by name in the file's text; the cells around them are written here (docs/notebook.md).
"""
import argparse
import ast
import re
import sys
import textwrap
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machinery.datasets import (DATASET_HOME, cache_file_names,  # noqa: E402
                                official_file_names)

NOTEBOOK = ROOT / "model_batchnorm.ipynb"
LESSON, PLOTTER, REQUIREMENTS = (ROOT / name for name in (
    "model_batchnorm.py", "plot_history.py", "requirements.txt"))
CONSTANTS = ("img_width", "img_height", "input_shape", "batch_size", "no_epochs",
             "no_classes", "validation_split", "verbosity", "learning_rate")
PLOT_DEFINITIONS = ("HistoryError", "load_history", "new_figure", "_panels", "_epochs", "_finish",
                    "plot_history", "plot_comparison")


class Source:
    """A Python file's text and its module-level statements, found by name."""

    def __init__(self, path):
        self.name, self.text = path.name, path.read_text(encoding="utf-8")
        self.tree = ast.parse(self.text)

    def definition(self, name):
        """The source of the function or class `name`, as the file spells it."""
        for node in self.tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name == name:
                return ast.get_source_segment(self.text, node)
        raise SystemExit(f"error: {self.name} defines no {name}: update tools/make_notebook.py")

    def assignments(self, names):
        """The module-level assignments that set any of `names`, in the file's order."""
        found, lines = set(), []
        for node in self.tree.body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            assigned = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
            if assigned & set(names):
                found |= assigned
                lines.append(ast.get_source_segment(self.text, node))
        if set(names) - found:
            raise SystemExit(f"error: {self.name} sets no {', '.join(set(names) - found)}")
        return "\n".join(lines)

    def call_in(self, function, callee, containing):
        """The call to `callee` in `function` whose first argument holds `containing`."""
        source = self.definition(function)
        for node in ast.walk(ast.parse(source)):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == callee
                    and node.args and containing in ast.unparse(node.args[0])):
                return ast.get_source_segment(source, node)
        raise SystemExit(f"error: {self.name}'s {function} has no {callee}(...{containing}...)")


def requirement(package, pattern):
    """requirements.txt's line for `package` matched against `pattern` (its groups)."""
    found = re.search(rf"^{re.escape(package)}{pattern}\s*$",
                      REQUIREMENTS.read_text(encoding="utf-8"), re.MULTILINE)
    if not found:
        raise SystemExit(f"error: requirements.txt has no line {package}{pattern}")
    return found.groups()


def settings_cell(lesson):
    return f"""\
# The lesson's configuration, as model_batchnorm.py sets it ("no_" means "number of").
{lesson.assignments(CONSTANTS)}
# This notebook's own: train and test on the first `limit` images (None: all of
# them; 2000 for a quick try), and the epochs of the short run without BatchNormalization.
limit = None
short_run_epochs = 5"""


def install_cell():
    low, high = requirement("tensorflow", r">=([\d.]+),<([\d.]+)")
    low_tuple, high_tuple = (tuple(int(p) for p in v.split(".")) for v in (low, high))
    loader = "extra-keras-datasets==" + requirement("extra-keras-datasets", r"==([\d.]+)")[0]
    return f'''\
# Installs only what is missing: extra-keras-datasets (the lesson's loader) when it
# cannot be imported, TensorFlow when the installed one is outside >={low},<{high}.
import importlib.metadata
import importlib.util
import re
import subprocess
import sys

missing = [] if importlib.util.find_spec("extra_keras_datasets") else ["{loader}"]
try:
    installed = importlib.metadata.version("tensorflow")
    release = tuple(int(part) for part in re.findall(r"\\d+", installed)[:{len(low_tuple)}])
except importlib.metadata.PackageNotFoundError:
    release = ()
if not {low_tuple} <= release < {high_tuple}:
    missing.append("tensorflow>={low},<{high}")
if missing:
    print("Installing", ", ".join(missing), "(restart the runtime if asked to)")
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--quiet", *missing])
else:
    print("Nothing to install: extra-keras-datasets and TensorFlow >={low},<{high} are there.")'''


IMPORTS = """\
import math
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # before TensorFlow: no C++ INFO lines

import keras
import numpy as np
from keras import layers
from matplotlib.figure import Figure

%matplotlib inline"""


def string_lines(text, indent):
    """`text` as string literals of about 80 characters a line (f-strings where needed)."""
    pieces = textwrap.wrap(text, 80 - indent, drop_whitespace=False, break_on_hyphens=False)
    return f"\n{' ' * indent}".join(f'{"f" if "{" in p else ""}"{p}"' for p in pieces)


def load_cell():
    official, cached = (", ".join(names("kmnist").values())
                        for names in (official_file_names, cache_file_names))
    advice = string_lines(
        f"could not download KMNIST ({{err}}). Offline? Copy the four files from "
        f"{DATASET_HOME} ({official}) into {{cache}} as {cached}, then run this cell again", 8)
    return f'''\
import logging
from pathlib import Path

from extra_keras_datasets import kmnist

logging.disable(logging.INFO)  # the package's progress lines; its citation request stays
try:
    (x_train, y_train), (x_test, y_test) = kmnist.load_data(type="kmnist")
except Exception as err:  # the package raises a bare Exception when a download fails
    if "URL fetch failure" not in str(err):
        raise
    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"
    raise RuntimeError(
        {advice}) from None
finally:
    logging.disable(logging.NOTSET)
if limit:
    x_train, y_train, x_test, y_test = (a[:limit] for a in (x_train, y_train, x_test, y_test))
print(f"{{len(x_train):,}} training and {{len(x_test):,}} test images")'''


BATCH_STATISTICS = '''\
def accuracy_with_batch_statistics(model, x, y, batch_size):
    """Accuracy with every BatchNormalization layer using each batch's own statistics
    (training mode); the moving statistics that this moves are put back afterwards."""
    saved = [variable.numpy() for variable in model.non_trainable_variables]
    correct = 0
    for start in range(0, len(x), batch_size):
        probabilities = model(x[start:start + batch_size], training=True)
        correct += int(np.sum(np.argmax(probabilities, axis=-1) == y[start:start + batch_size]))
    for variable, value in zip(model.non_trainable_variables, saved):
        variable.assign(value)
    return correct / len(x)


split_at = int(len(x_train) * (1 - validation_split))  # fit() validated on the last images
x_val, y_val = x_train[split_at:], y_train[split_at:]
moving = model.evaluate(x_val, y_val, batch_size=batch_size, verbose=0)[1]
batch = accuracy_with_batch_statistics(model, x_val, y_val, batch_size)
momentum = next(layer.momentum for layer in model.layers
                if isinstance(layer, layers.BatchNormalization))
steps = len(history.history["loss"]) * math.ceil(split_at / batch_size)
print(f"Validation accuracy: {moving:.4f} with the moving statistics (what inference "
      f"uses), {batch:.4f} with each batch's own (what training uses).")
print(("The moving averages lag" if batch - moving > 0.05 else "They agree")
      + f": {steps} steps at momentum {momentum} leave {momentum}^{steps} = "
      f"{momentum ** steps:.1%} of their starting values in them. Remedy for short runs and "
      "small data: build_model(input_shape, no_classes, norm_layer=lambda: "
      "layers.BatchNormalization(momentum=0.9)), or recompute them from the training images "
      "after training (model_batchnorm.py --recompute-bn-stats).")
figure = Figure(figsize=(5, 3.4), layout="constrained")
axes = figure.subplots()
axes.bar(["moving statistics\\n(inference)", "batch statistics\\n(training)"], [moving, batch])
axes.set(ylim=(0, 1), ylabel="validation accuracy", title="One model, two kinds of statistics")
figure'''


def lesson_cells(lesson):
    """(id, markdown line, code) per step of the lesson, in its order."""
    test_line = lesson.call_in("test", "print", "Test loss: ")
    return [
        ("settings", "**Settings**: the lesson's values. For a quick try, set `limit = 2000` "
         "and `no_epochs = 3`.",
         settings_cell(lesson)),
        ("install", "**Install** what Colab or your environment lacks, and nothing else.",
         install_cell()),
        ("imports", "**Imports.** TensorFlow's own Keras; TensorFlow may still print a few "
         "start-up lines about the machine.", IMPORTS),
        ("load", "**Load** KMNIST with `extra-keras-datasets` (downloaded once into Keras' "
         "cache, `~/.keras/datasets/`).", load_cell()),
        ("scale", "**Scale**: reshape to one channel, float32, pixels in [0, 1]; labels stay "
         "integers.", lesson.definition("preprocess")
         + "\n\n\nx_train, x_test = preprocess(x_train), preprocess(x_test)"),
        ("build", "**Build** the network: two convolutional blocks, five BatchNormalization "
         "layers.", lesson.definition("build_model")
         + "\n\n\nmodel = build_model(input_shape, no_classes)\nmodel.summary()"),
        ("compile", "**Compile**: Adam, sparse categorical cross-entropy, accuracy.",
         lesson.definition("compile_model") + "\n\n\nmodel = compile_model(model)"),
        ("fit", "**Train**: Keras holds out the last `validation_split` of the training "
         "images for validation.",
         "history = model.fit(x_train, y_train, batch_size=batch_size, epochs=no_epochs,\n"
         "                    verbose=verbosity, validation_split=validation_split)"),
        ("evaluate", "**Test** on the test images.",
         "test_loss, test_accuracy = (float(v) for v in model.evaluate(x_test, y_test, "
         "verbose=0))\n" + test_line)]


def own_cells(plotter):
    """The history plotted with plot_history.py's functions, then the notebook's own."""
    plotting = "\n\n\n".join(plotter.definition(name) for name in PLOT_DEFINITIONS)
    return [
        ("plotting-helper", "The **plotting helper**: `plot_history.py`'s functions.",
         "import json\nfrom pathlib import Path\n\nimport numpy as np\n"
         "from matplotlib.figure import Figure\n\n\n" + plotting),
        ("plot", "**Training history**: accuracy and loss per epoch.", "plot_history(history)"),
        ("batch-statistics", "**Batch against moving statistics.** BatchNormalization trains "
         "with each batch's statistics and infers with their moving averages; after few "
         "steps those lag.", BATCH_STATISTICS),
        ("without-batchnorm", "**Without BatchNormalization**: the same network minus its "
         "five BatchNormalization layers, on a short run.",
         "plain = compile_model(build_model(input_shape, no_classes, batchnorm=False))\n"
         "plain_history = plain.fit(x_train, y_train, batch_size=batch_size,\n"
         "                          epochs=short_run_epochs, verbose=verbosity,\n"
         "                          validation_split=validation_split)"),
        ("comparison", "**Both, side by side**: validation accuracy and loss per epoch. "
         "With BatchNormalization they come from its moving statistics, which lag on "
         "short runs (above).",
         'plot_comparison([history, plain_history],\n'
         '                ["with BatchNormalization", "without BatchNormalization"])'),
    ]


INTRODUCTION = """\
# Batch Normalization in Keras, trained on Kuzushiji-MNIST

MachineCurve's lesson [*How to use Batch Normalization with Keras?*](https://www.machinecurve.com/index.php/2020/01/15/how-to-use-batch-normalization-with-keras/)
(2020), as `model_batchnorm.py` runs it, in a notebook that runs alone in Colab or Jupyter:
run all cells for the lesson's full run (25 epochs on KMNIST's 60,000 training images),
or set `limit` below for a quick try. Written by `tools/make_notebook.py` from
`model_batchnorm.py` and `plot_history.py`: change those, not this notebook."""


def notebook():
    nb = new_notebook(metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    nb.cells.append(new_markdown_cell(INTRODUCTION, id="introduction"))
    for name, line, code in lesson_cells(Source(LESSON)) + own_cells(Source(PLOTTER)):
        nb.cells.append(new_markdown_cell(line, id=f"{name}-text"))
        nb.cells.append(new_code_cell(code, id=name, metadata=(
            {"tags": ["parameters"]} if name == "settings" else {})))
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when model_batchnorm.ipynb differs from its source")
    text, args = notebook(), parser.parse_args(argv)
    if not args.check:
        NOTEBOOK.write_text(text, encoding="utf-8")
        print(f"Wrote {NOTEBOOK.name}")
    elif not NOTEBOOK.is_file() or NOTEBOOK.read_text(encoding="utf-8") != text:
        print(f"error: {NOTEBOOK.name} differs from its source: run python "
              "tools/make_notebook.py", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
