"""What `--compare` compares: one entry of KINDS per question, with its variants (the
settings each changes, a network of networks.py among them), its own rows of the table and
its picture. A new question is one more entry here; the runner (compare.py), the callbacks,
the settings and the output folder's files follow. Loads no TensorFlow: --help lists the
questions at once."""
import collections
import dataclasses
import json
from typing import Callable

import numpy as np

import plot_history
from machinery import files

LESSON_BATCH_SIZES = (16, 64, 250)  # --compare batch-size without several --batch-size


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str  # its sub-folder of the output folder
    label: str  # its column in the table, its line in the picture
    changes: dict  # the settings it changes; "network" names one of networks.NETWORKS


@dataclasses.dataclass(frozen=True)
class Comparison:
    question: str  # for --help
    variants: Callable  # (learning rates, batch sizes) -> [Variant]
    draw: Callable  # its picture, files.comparison_picture(kind): ([Run], path, where)
    rows: tuple = ()  # (label, value(result, folder), format): the table's own rows
    lesson_layers: bool = True  # its networks have the lesson's layers (layer inputs)


# A run as the pictures and the rows take it: its label, its result (train_and_test's:
# the history, run.json's fields) and its folder.
Run = collections.namedtuple("Run", "label result folder")


def rate_text(rate):
    """0.001 -> '0.001', 1e-05 -> '1e-05': short, and what the user typed for usual rates."""
    return f"{rate:g}"


BATCHNORM_LABELS = {"batchnorm": "with BatchNormalization",
                    "no_batchnorm": "without BatchNormalization"}


def with_and_without(rates, sizes):
    """The lesson's question: the network with and without BatchNormalization at each
    learning rate, grouped by rate; one rate keeps the plain names of a run without
    --learning-rate."""
    several = len(rates) > 1
    return [Variant(f"{variant}_lr{rate_text(rate)}" if several else variant,
                    f"{label}, learning rate {rate:g}" if several else label,
                    {"batchnorm": variant == "batchnorm", "learning_rate": rate})
            for rate in rates for variant, label in BATCHNORM_LABELS.items()]


def over_epochs(runs, path, where):
    """Validation accuracy and loss per epoch of every run, batch statistics dashed; with
    several learning rates, validation accuracy alone, a panel per rate (draw_curves)."""
    rates = [run.result["config"]["learning_rate"] for run in runs]
    if len(set(rates)) > 1:
        return draw_curves([(run.label, rate, run.result["history"])
                            for run, rate in zip(runs, rates)], path,
                           f"{where}: validation accuracy")
    return plot_history.plot_comparison([run.result["history"] for run in runs],
                                        [run.label for run in runs], path,
                                        f"{where}: validation curves")


def draw_curves(runs, path, title=None):
    """Validation accuracy per epoch, a panel per learning rate (six or more curves in one
    panel cannot be read), batch statistics dashed. `runs`: (label, rate, history)."""
    rates = list(dict.fromkeys(rate for _, rate, _ in runs))
    figure = plot_history.new_figure(figsize=(4.2 * len(rates), 3.8), layout="constrained")
    axes = np.asarray(figure.subplots(1, len(rates), squeeze=False, sharey=True)).ravel()
    for label, rate, history in runs:
        ax = axes[rates.index(rate)]
        epochs = np.arange(1, len(history["val_accuracy"]) + 1)
        line, = ax.plot(epochs, history["val_accuracy"], marker=".", label=label)
        if "val_accuracy_batch_stats" in history:
            ax.plot(epochs, history["val_accuracy_batch_stats"], linestyle="--",
                    color=line.get_color(), label=f"{label}, batch statistics")
    for ax, rate in zip(axes, rates):
        ax.set(title=f"learning rate {rate:g}", xlabel="epoch", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="lower right")  # the same variants in every panel
    axes[0].set_ylabel("validation accuracy")
    if title:
        figure.suptitle(title)
    files.write_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
    return figure


def batch_sizes(rates, sizes):
    return [Variant(f"batch_{size}", f"batch size {size}", {"batch_size": size})
            for size in (sizes if len(sizes) > 1 else LESSON_BATCH_SIZES)]


def diagnosed(key):
    """A value of the run's BatchNormalization diagnosis (run.json), or None without one."""
    return lambda result, folder: (result["batchnorm_diagnosis"] or {}).get(key)


def sigmoid_share(layer):
    """The share of the `layer`-th sigmoid's inputs in its near-linear range, last epoch."""
    return lambda result, folder: json.loads(
        (folder / files.SIGMOID_INPUTS_JSON).read_text())["share"][-1][layer]


def sigmoid_inputs(runs, path, where):
    """A panel per sigmoid layer: the share of its inputs in the near-linear range after
    each epoch (0: before training), a line per run."""
    tracks = {run.label: json.loads((run.folder / files.SIGMOID_INPUTS_JSON).read_text())
              for run in runs}
    layers = len(next(iter(tracks.values()))["layers"])
    figure = plot_history.new_figure(figsize=(4.2 * layers, 3.8), layout="constrained")
    axes = np.asarray(figure.subplots(1, layers, squeeze=False, sharey=True)).ravel()
    for label, track in tracks.items():
        shares = np.asarray(track["share"], dtype=float)  # None (not measured): a gap
        for index, ax in enumerate(axes):
            ax.plot(np.arange(len(shares)), shares[:, index], marker=".", label=label)
    for index, ax in enumerate(axes):
        ax.set(title=f"sigmoid {index + 1}", xlabel="epoch", ylim=(0, 1.02))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of inputs within ±1")
    axes[0].legend(fontsize=8)
    figure.suptitle(f"{where}: each sigmoid's inputs within ±1, on a probe batch, "
                    "training mode")
    files.write_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
    return figure


def fixed(*variants):
    """The variants of a question that no flag changes."""
    return lambda rates, sizes: list(variants)


KINDS = {
    "batchnorm": Comparison(
        "with and without BatchNormalization, at each --learning-rate",
        with_and_without, over_epochs),
    "placement": Comparison(
        "BatchNormalization after the ReLU (the lesson) or before it (the paper)",
        fixed(Variant("after_relu", "after the ReLU (the lesson's)", {}),
              Variant("before_relu", "before the ReLU (Ioffe & Szegedy's)",
                      {"network": "before_relu"})),
        over_epochs, lesson_layers=False),
    "batch-size": Comparison(
        "BatchNormalization at each --batch-size (16, 64 and 250 unless several given)",
        batch_sizes, over_epochs,
        rows=(("training steps", diagnosed("training_steps"), "{:,}"),
              ("share of the moving statistics' start left (momentum^steps)",
               diagnosed("momentum_power_steps"), "{:.1%}"))),
    "gamma-beta": Comparison(
        "sigmoid activations, BatchNormalization with and without its scale gamma and "
        "shift beta",
        fixed(Variant("sigmoid_gamma_beta", "sigmoid, with gamma and beta",
                      {"network": "sigmoid_gamma_beta"}),
              Variant("sigmoid_no_gamma_beta", "sigmoid, without gamma and beta",
                      {"network": "sigmoid_no_gamma_beta"})),
        sigmoid_inputs,
        rows=tuple((f"sigmoid {k + 1}: share of its inputs between -1 and 1, last epoch",
                    sigmoid_share(k), "{:.1%}") for k in range(3)), lesson_layers=False),
    "normalization": Comparison(
        "BatchNormalization, LayerNormalization, GroupNormalization or none",
        fixed(Variant("norm_batch", "BatchNormalization", {}),
              Variant("norm_layer", "LayerNormalization", {"network": "layer_normalization"}),
              Variant("norm_group", "GroupNormalization", {"network": "group_normalization"}),
              Variant("norm_none", "none", {"batchnorm": False})),
        over_epochs, lesson_layers=False),
}
DEFAULT = "batchnorm"  # --compare alone: the lesson's question


def folder_names(kind, rates, sizes):
    """The sub-folders of --compare `kind` (None: the lesson's question) at these rates
    and sizes, and always those of the first alone: a folder started with one rate and
    resumed with several holds only its own."""
    comparison = KINDS[kind or DEFAULT]
    names = [v.name for v in comparison.variants(rates, sizes)]
    return names + [v.name for v in comparison.variants(rates[:1], sizes[:1])
                    if v.name not in names]


def outputs(kind, rates, sizes):
    """(sub-folders, files beside them) a run may create for --compare `kind`."""
    beside = [files.comparison_picture(kind or DEFAULT), files.LAYER_INPUTS_PNG]
    return folder_names(kind, rates, sizes), beside
