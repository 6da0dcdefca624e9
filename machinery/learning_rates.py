"""--learning-rate: Adam's step size, several at once under --compare (Ioffe & Szegedy
2015, Section 3.3: BatchNormalization lets a network train with higher rates), a run
that diverges stopped with one line, and the two clocks of convergence (epochs and
wall-clock seconds to a validation accuracy)."""
import math

import numpy as np

from plot_history import new_figure
from machinery.files import write_atomically
from machinery.quiet import keras


def rate_text(rate):
    """0.001 -> '0.001', 1e-05 -> '1e-05': short, and what the user typed for usual rates."""
    return f"{rate:g}"


def pair_names(variants, rates):
    """The sub-folder of each (variant, rate) pair, grouped by rate; one rate keeps the
    variants' own names, the layout of a --compare run without --learning-rate."""
    if len(rates) == 1:
        return [(variant, rates[0], variant) for variant in variants]
    return [(variant, rate, f"{variant}_lr{rate_text(rate)}") for rate in rates
            for variant in variants]


def diverged_at(loss):
    """The first epoch (counted from 1) whose training loss is NaN or infinite, or None."""
    for epoch, value in enumerate(loss, start=1):
        if not math.isfinite(value):
            return epoch
    return None


def seconds_to_reach(epoch, epoch_seconds, resumed_from=0):
    """Wall-clock seconds of the epochs up to `epoch` (validation included); None when
    the epoch was not reached or some of those epochs ran before a resume (not timed)."""
    if epoch is None or resumed_from > 0 or len(epoch_seconds) < epoch:
        return None
    return sum(epoch_seconds[:epoch])


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training at the end of the epoch whose loss turned NaN or infinite, with
    one line saying so (keras.callbacks.TerminateOnNaN stops within the epoch, but a
    per-step hook makes Keras hand every step's logs to Python, which slows the lesson's
    run: see machinery/quiet.py). The epoch is validated and logged, so the history
    shows where it diverged."""

    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            print(f"Diverged: the training loss became {float(loss)} in epoch {epoch + 1} "
                  f"at learning rate {rate_text(self.learning_rate)}; this run stops "
                  "here, the others go on.")


def draw_curves(runs, path, title=None):
    """Validation accuracy per epoch, a panel per learning rate, both variants in each
    (batch statistics dashed): six or more curves in one panel cannot be read. `runs`:
    (label, learning rate, history) per run, in the order of the panels."""
    rates = list(dict.fromkeys(rate for _, rate, _ in runs))
    figure = new_figure(figsize=(4.2 * len(rates), 3.8), layout="constrained")
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
    write_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
    return figure
