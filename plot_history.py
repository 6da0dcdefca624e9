"""Plot a Keras training history: accuracy and loss per epoch, training and validation.

As a function: `plot_history(history, "curves.png")` takes a Keras History, its
`.history` dict, or the path of a history.json. From the command line:

    python plot_history.py outputs/history.json -o curves.png
    python plot_history.py a.json b.json --labels "BN" "no BN" -o overlay.png

One file draws its training and validation curves; several files are overlaid
(validation curves, one colour per run). Also draws the test-set pictures that
model_batchnorm.py writes: a grid of predictions and a confusion matrix.

Stands alone: it imports nothing of this project (only NumPy and matplotlib), so
it can be copied into other code. Bad input is one line on stderr and exit code 1
(2 for a bad command line), without a traceback.
"""
import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np


class HistoryError(Exception):
    """A history that cannot be plotted, or a bad command line: the message says why
    and what to do; `code` is the exit code."""

    code = 1


class UsageError(HistoryError):
    code = 2  # a bad command line, as argparse uses


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line instead of usage text."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def load_history(source):
    """A dict of per-epoch lists from a History, a dict, or a history.json path."""
    if hasattr(source, "history"):
        source = source.history
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            source = json.loads(path.read_text())
        except FileNotFoundError:
            raise HistoryError(f"{path} does not exist: give the path of a history.json") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise HistoryError(f"{path} is not valid JSON ({err}): give a history.json "
                               "written by model_batchnorm.py") from None
    if not isinstance(source, dict):
        raise HistoryError(f"expected a History, a dict or a JSON path, got {type(source).__name__}")
    for key in ("loss", "accuracy"):
        series = source.get(key)
        if not isinstance(series, list) or not series:
            raise HistoryError(f"the history has no '{key}' series (it has {sorted(source)}): "
                               "it must come from fit() with metrics=['accuracy']")
    return source


def new_figure(**options):
    """A matplotlib Figure, without pyplot; matplotlib is imported when a picture is drawn."""
    from matplotlib.figure import Figure
    return Figure(**options)


def _panels(title=None):
    figure = new_figure(figsize=(11, 4.2), layout="constrained")
    axes = figure.subplots(1, 2)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    return figure, axes


def _epochs(series):
    return np.arange(1, len(series) + 1)


def _finish(figure, axes, path):
    for ax in axes:
        ax.legend()
        ax.xaxis.get_major_locator().set_params(integer=True)
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def plot_history(history, path=None, title=None):
    """Two panels, accuracy and loss per epoch, training and validation; returns the Figure."""
    history = load_history(history)
    figure, axes = _panels(title)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        for key, label in ((metric, "training"), (f"val_{metric}", "validation")):
            if key in history:
                ax.plot(_epochs(history[key]), history[key], marker=".", label=label)
        key = f"val_{metric}_batch_stats"  # recorded with --track-batch-stats
        if key in history:
            ax.plot(_epochs(history[key]), history[key], marker=".", linestyle="--",
                    label="validation, batch statistics")
    return _finish(figure, axes, path)


def plot_comparison(histories, labels, path=None, title=None):
    """Overlay several runs: validation accuracy and loss (training where none), one colour each."""
    histories = [load_history(h) for h in histories]
    if len(labels) != len(histories):
        raise HistoryError(f"{len(histories)} histories but {len(labels)} labels: "
                           "give one label per history")
    figure, axes = _panels(title)
    for ax, metric in zip(axes, ("accuracy", "loss")):
        ax.set_title(f"Validation {metric}")
        for history, label in zip(histories, labels):
            key = f"val_{metric}" if f"val_{metric}" in history else metric
            suffix = "" if key.startswith("val_") else " (training)"
            line, = ax.plot(_epochs(history[key]), history[key], marker=".", label=label + suffix)
            batch_key = f"val_{metric}_batch_stats"
            if batch_key in history:  # beside it: the same model with batch statistics
                ax.plot(_epochs(history[batch_key]), history[batch_key], linestyle="--",
                        color=line.get_color(), label=f"{label}, batch statistics")
    return _finish(figure, axes, path)


def plot_batchnorm_statistics(statistics, path=None):
    """Each BatchNormalization layer's moving mean and variance (averaged over its
    channels) against the statistics of a batch of training images, per epoch:
    `statistics[epoch][layer]` holds moving_mean, moving_variance, batch_mean and
    batch_variance. Shows how far inference's statistics trail training's."""
    layers = len(statistics[0])
    figure = new_figure(figsize=(3.2 * layers, 5.6), layout="constrained")
    axes = np.asarray(figure.subplots(2, layers, squeeze=False))
    epochs = _epochs(statistics)
    for index in range(layers):
        for row, stat in enumerate(("mean", "variance")):
            ax = axes[row, index]
            for kind, style in (("moving", "-"), ("batch", "--")):
                ax.plot(epochs, [epoch[index][f"{kind}_{stat}"] for epoch in statistics],
                        linestyle=style, marker=".", label=f"{kind} {stat}")
            if stat == "variance":
                ax.set_yscale("log")
            ax.set_title(f"BatchNormalization {index + 1}: {stat}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.legend(fontsize=8)
            ax.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle("Moving statistics (inference) against batch statistics (training), "
                    "averaged over channels")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


# ---------------------------------------------------------------------------
# Test-set pictures
# ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def font_covering(characters):
    """The name of an installed font that has a glyph for every character, or None."""
    from matplotlib import font_manager, ft2font
    needed = {ord(c) for c in characters}
    for entry in font_manager.fontManager.ttflist:
        if entry.name.startswith("Last Resort"):  # matplotlib's: a box for every character
            continue
        try:
            charmap = ft2font.FT2Font(entry.fname).get_charmap()
        except (OSError, RuntimeError, ValueError):
            continue
        if needed <= charmap.keys():
            return entry.name
    return None


def class_labels(names):
    """Display labels and font: the characters when a font has them, else the romanization."""
    characters = "".join(character for character, _ in names)
    if characters.isascii():
        return [character for character, _ in names], None
    font = font_covering(characters)
    if font is None:
        return [romanization for _, romanization in names], None
    return [character for character, _ in names], font


def plot_predictions(images, y_true, y_pred, names, path=None, rows=4, columns=8):
    """A grid of the first test images titled 'true -> predicted'; wrong ones in red."""
    labels, font = class_labels(names)
    count = min(rows * columns, len(images))
    figure = new_figure(figsize=(columns * 1.3, rows * 1.5), layout="constrained")
    axes = np.atleast_1d(figure.subplots(rows, columns)).ravel()
    for i, ax in enumerate(axes):
        ax.set_axis_off()
        if i >= count:
            continue
        ax.imshow(np.asarray(images[i]).squeeze(), cmap="gray_r")
        right = y_true[i] == y_pred[i]
        ax.set_title(f"{labels[y_true[i]]} → {labels[y_pred[i]]}", fontsize=10,
                     color="black" if right else "red", fontfamily=font)
        if not right:
            ax.set_axis_on()
            ax.set(xticks=[], yticks=[])
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2)
    wrong = int(np.sum(np.asarray(y_true[:count]) != np.asarray(y_pred[:count])))
    figure.suptitle(f"First {count} test images: true → predicted ({wrong} wrong, in red)")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


def confusion_matrix(y_true, y_pred, classes):
    """counts[i, j]: images of class i predicted as class j."""
    # int64 first: uint8 labels (as the dataset files hold them) would wrap around
    # at 256, and K49 needs up to 48 * 49 + 48.
    flat = np.asarray(y_true).astype(np.int64) * classes + np.asarray(y_pred).astype(np.int64)
    return np.bincount(flat, minlength=classes * classes).reshape(classes, classes)


def plot_confusion_matrix(y_true, y_pred, names, path=None):
    labels, font = class_labels(names)
    counts = confusion_matrix(y_true, y_pred, len(names))
    size = max(6, len(names) * 0.3)
    figure = new_figure(figsize=(size + 1, size), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=ax, label="images")
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, labels, fontfamily=font)
    ax.set_yticks(ticks, labels, fontfamily=font)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if len(names) <= 20:  # numbers stay readable
        threshold = counts.max() / 2
        for (i, j), value in np.ndenumerate(counts):
            ax.text(j, i, str(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"Test-set confusion matrix (accuracy {accuracy:.4f})")
    if path is not None:
        figure.savefig(path, dpi=100)
    return figure


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
def default_labels(paths):
    """The files' names; with their folders where two names are the same
    (batchnorm/history.json, no_batchnorm/history.json). Whole paths would crowd
    the legend out of the picture."""
    names = [path.name for path in paths]
    if len(set(names)) == len(names):
        return names
    return [f"{path.parent.name}/{path.name}" for path in paths]


def main(argv=None):
    """The command line; bad input raises HistoryError, which command_line() shows as
    one line."""
    parser = OneLineParser(description="Plot one training history, or overlay several.")
    parser.add_argument("histories", nargs="+", type=Path, help="history.json file(s)")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="PNG to write (default: the first file's name with .png)")
    parser.add_argument("--labels", nargs="+", default=None,
                        help="one legend label per file when overlaying (default: file names)")
    parser.add_argument("--title", default=None, help="title above the panels")
    args = parser.parse_args(argv)
    output = args.output or args.histories[0].with_suffix(".png")
    try:
        if len(args.histories) == 1 and args.labels is None:
            plot_history(args.histories[0], output, args.title)
        else:
            labels = args.labels or default_labels(args.histories)
            plot_comparison(args.histories, labels, output, args.title)
    except OSError as err:
        raise HistoryError(f"cannot write {output} ({err.strerror}): "
                          "choose another path with -o") from None
    print(f"Wrote {output}")


def command_line(argv=None):
    """main(argv) with bad input as one line on stderr; returns the exit code."""
    try:
        main(argv)
    except HistoryError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
