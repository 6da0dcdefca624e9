"""--track-layer-inputs: the 15th, 50th and 85th percentiles of one layer's inputs over
training, on a fixed probe batch of validation images in training mode, drawn as Ioffe &
Szegedy's Figure 1. The moving statistics such a call moves are put back, and it draws no
random numbers, so training goes on exactly as without it (tested)."""
import json
import math
import time

import numpy as np

from plot_history import new_figure
from machinery.batchnorm_stats import moving_statistics_kept, norm_layers
from machinery.files import LAYER_INPUTS_JSON, LAYER_INPUTS_PNG, write_atomically, write_json
from machinery.flags import LESSON_LAYERS
from machinery.quiet import keras

PERCENTILES = (15, 50, 85)
POINTS = 100  # about this many per run: the interval is derived from the run's steps
# The measurements may take at most this share of training's wall-clock time: a point
# is skipped while they would exceed it (a short run on a slow machine gets fewer).
BUDGET = 0.03


def lesson_names(model):
    """The lesson's name (flags.LESSON_LAYERS) of each of `model`'s layers, by position;
    --no-batchnorm's network has the lesson's other layers, in their order."""
    normalized = bool(norm_layers(model))
    return [name for name in LESSON_LAYERS
            if normalized or not name.startswith("batch_normalization")]


def measured_layer(model, name):
    """(lesson name, layer) whose inputs stand for those of the lesson's layer `name`:
    itself, or without BatchNormalization the next layer, which receives them."""
    names = lesson_names(model)
    candidate = next(n for n in LESSON_LAYERS[LESSON_LAYERS.index(name):] if n in names)
    return candidate, model.layers[names.index(candidate)]


def percentiles(model, upstream, probe):
    """PERCENTILES of what `upstream` (the model cut at a layer's inputs) gives on `probe`
    in training mode; the moving statistics are left as they were."""
    with moving_statistics_kept(model):
        values = np.asarray(upstream(probe, training=True))
    return [float(v) for v in np.percentile(values, PERCENTILES)]


def previous_points(path, layer, interval):
    """The points an interrupted run recorded with the same layer and interval."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if saved.get("layer") != layer or saved.get("interval_steps") != interval:
        return {}
    return saved


class LayerInputs(keras.callbacks.Callback):
    """Every `interval` steps, before the first and after the last, the percentiles of the
    layer's inputs on the probe batch, within BUDGET; written to `path` after each epoch,
    where a resumed run continues them."""

    def __init__(self, probe, name, path, picture=None):
        super().__init__()
        self.probe, self.name, self.path, self.picture = probe, name, path, picture

    def on_train_begin(self, logs=None):
        total = self.params["steps"] * self.params["epochs"]
        self.interval = max(1, math.ceil(total / POINTS))
        measured, layer = measured_layer(self.model, self.name)
        self.upstream = keras.Model(self.model.inputs[0], layer.input)  # built once
        saved = previous_points(self.path, self.name, self.interval)
        done = self.steps_done()
        self.started = time.perf_counter() - saved.get("wall_seconds", 0.0)
        self.series = {"layer": self.name, "measured": f"inputs of {measured}",
                       "percentiles": list(PERCENTILES), "probe_images": len(self.probe),
                       "interval_steps": self.interval, "budget": BUDGET,
                       "seconds": saved.get("seconds", 0.0), "wall_seconds": 0.0,
                       "steps": [], **{f"p{p}": [] for p in PERCENTILES}}
        for index, step in enumerate(saved.get("steps", [])):
            if step <= done:  # not those of an epoch the backup does not hold
                self.append(step, [saved[f"p{p}"][index] for p in PERCENTILES])
        if not self.series["steps"]:
            self.measure(done)

    def steps_done(self):
        return int(np.asarray(self.model.optimizer.iterations))

    def append(self, step, values):
        self.series["steps"].append(step)
        for p, value in zip(PERCENTILES, values):
            self.series[f"p{p}"].append(value)

    def measure(self, step):
        start = time.perf_counter()
        self.append(step, percentiles(self.model, self.upstream, self.probe))
        self.series["seconds"] += time.perf_counter() - start

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        """Before a step (with steps_per_execution, before a call of several): the steps
        done so far, counted in Python. Not after a step: a per-step end hook makes Keras
        give up dispatching callbacks asynchronously, which slows every step."""
        step = self.epoch * self.params["steps"] + batch
        affordable = self.series["seconds"] <= BUDGET * (time.perf_counter() - self.started)
        if step >= self.series["steps"][-1] + self.interval and affordable:
            self.measure(step)

    def on_epoch_end(self, epoch, logs=None):
        self.write()

    def write(self):
        self.series["wall_seconds"] = time.perf_counter() - self.started
        write_json(self.path, self.series)

    def on_train_end(self, logs=None):
        """The last point is the final weights', those model.keras holds."""
        if self.steps_done() > self.series["steps"][-1]:
            self.measure(self.steps_done())
            self.write()
        if self.picture:
            variant = "with" if norm_layers(self.model) else "without"
            rate = float(np.asarray(self.model.optimizer.learning_rate))
            draw([self.series], [f"{variant} BatchNormalization, learning rate {rate:g}"],
                 self.picture)


def tracker(run, x_train):
    """The LayerInputs of run.layer_inputs_of, on the first batch of validation images."""
    probe = run.preprocess(x_train[run.split_at:run.split_at + run.batch_size])
    return LayerInputs(probe, run.layer_inputs_of, run.output_dir / LAYER_INPUTS_JSON,
                       run.output_dir / LAYER_INPUTS_PNG if run.pictures else None)


def draw(records, labels, path, title=None):
    """A panel per run: the percentiles of the layer's inputs against training steps, as
    in Ioffe & Szegedy's Figure 1 (b, c)."""
    columns = min(len(records), 2)
    rows = math.ceil(len(records) / columns)
    figure = new_figure(figsize=(5.2 * columns, 3.4 * rows), layout="constrained")
    # A row shares its scale: one learning rate, with and without BatchNormalization.
    axes = np.asarray(figure.subplots(rows, columns, squeeze=False, sharey="row")).ravel()
    for ax, record, label in zip(axes, records, labels):
        for p, style in zip(PERCENTILES, (":", "-", "--")):
            ax.plot(record["steps"], record[f"p{p}"], linestyle=style, color="tab:blue",
                    label=f"{p}th percentile")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("training step")
        ax.set_ylabel(f"inputs of {record['layer']}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in axes[len(records):]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    write_atomically(path, lambda partial: figure.savefig(partial, dpi=100))
    return figure
