"""The networks --compare trains besides the lesson's (comparisons.py names them), each
built with the normalisation layer a run would use (--fast, --bn-momentum, --sync-bn),
and each may measure itself during training (callbacks.for_run adds its measures)."""
import contextlib
import dataclasses
import json
from typing import Callable, Optional

import numpy as np

from machinery import files
from machinery.batchnorm_stats import moving_statistics_kept
from machinery.quiet import keras

# |x| below this, the sigmoid stays within 0.019 of its tangent at 0, 1/2 + x/4
# (sigmoid(1) = 0.731 against 0.75): its near-linear middle.
NEAR_LINEAR = 1.0


@dataclasses.dataclass(frozen=True)
class Network:
    name: str  # as run.json records it
    build: Callable  # (the lesson's build_model, input shape, classes, norm factory) -> model
    measures: Optional[Callable] = None  # (run, x_train) -> callbacks that measure it


def normalized_before(activation, center=True, scale=True):
    """The lesson's layers, each BatchNormalization that follows a ReLU moved before its
    activation, as Ioffe & Szegedy place it: the convolution or Dense layer before it
    without its bias, which β takes over. The two after the poolings stay."""
    def build(lesson, input_shape, classes, norm):
        layers = keras.layers

        def normalized():
            return norm(center=center, scale=scale)

        return keras.Sequential([
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), use_bias=False), normalized(),
            layers.Activation(activation),
            layers.MaxPooling2D(pool_size=(2, 2)), normalized(),
            layers.Conv2D(64, kernel_size=(3, 3), use_bias=False), normalized(),
            layers.Activation(activation),
            layers.MaxPooling2D(pool_size=(2, 2)), normalized(),
            layers.Flatten(),
            layers.Dense(256, use_bias=False), normalized(), layers.Activation(activation),
            layers.Dense(classes, activation="softmax"),
        ], name=f"{activation}_after_batchnorm")
    return build


def lesson_with(normalization):
    """The lesson's network with another normalisation layer in BatchNormalization's five
    places, as Keras builds it by default."""
    return lambda lesson, input_shape, classes, norm: lesson(
        input_shape, classes, True, getattr(keras.layers, normalization))


def sigmoids(model):
    return [layer for layer in model.layers
            if getattr(layer, "activation", None) is keras.activations.sigmoid
            and isinstance(layer, keras.layers.Activation)]


class SigmoidInputs(keras.callbacks.Callback):
    """Before training and after each epoch, each sigmoid layer's share of inputs within
    ±NEAR_LINEAR on a probe batch in training mode (as training sees them; the moving
    statistics are put back), written to `path`, kept across a resume. The epochs a
    resumed run has done are known only at the first epoch's start: the backup's
    callback, after this one, restores them in on_train_begin."""

    def __init__(self, probe, path):
        super().__init__()
        self.probe, self.path = probe, path

    def on_train_begin(self, logs=None):
        layers = sigmoids(self.model)
        self.cut = keras.Model(self.model.inputs[0], [layer.input for layer in layers])
        self.names, self.track = [layer.name for layer in layers], None

    def on_epoch_begin(self, epoch, logs=None):
        """Fit's first epoch here is epoch `epoch`: as many were done before (a resume)."""
        if self.track is not None:
            return
        self.track = {"layers": self.names, "near_linear": NEAR_LINEAR, "share": []}
        if epoch:  # resumed: the epochs the backup holds, as measured before
            with contextlib.suppress(OSError, ValueError, KeyError):
                self.track["share"] = json.loads(self.path.read_text())["share"][:epoch + 1]
        if len(self.track["share"]) != epoch + 1:  # epochs measured by no one: unknown
            self.track["share"] = [[None] * len(self.names)] * epoch
            self.measure()

    def measure(self):
        with moving_statistics_kept(self.model):
            inputs = self.cut(self.probe, training=True)
        self.track["share"].append([float(np.mean(np.abs(np.asarray(x)) < NEAR_LINEAR))
                                    for x in inputs])

    def on_epoch_end(self, epoch, logs=None):
        self.measure()
        files.write_json(self.path, self.track)


def sigmoid_inputs(run, x_train):
    probe = run.preprocess(x_train[run.split_at:run.split_at + run.batch_size])
    return [SigmoidInputs(probe, run.output_dir / files.SIGMOID_INPUTS_JSON)]


NETWORKS = {network.name: network for network in (
    Network("before_relu", normalized_before("relu")),
    Network("sigmoid_gamma_beta", normalized_before("sigmoid"), sigmoid_inputs),
    Network("sigmoid_no_gamma_beta", normalized_before("sigmoid", center=False, scale=False),
            sigmoid_inputs),
    Network("layer_normalization", lesson_with("LayerNormalization")),
    Network("group_normalization", lesson_with("GroupNormalization")),
)}
