"""BatchNormalization's two kinds of statistics: diagnose, show and mend the lag.

Training normalises with each batch's own mean and variance; inference with
moving averages of them (momentum 0.99: each step keeps 99% of the average).
After few steps the averages still hold much of their starting values (mean 0,
variance 1) and trail the weights, so a model can learn perfectly and fail at
inference. This module measures that gap, records the statistics for a
picture, and recomputes the moving statistics from the final weights ("precise
BN", Wu & Johnson 2021, arXiv:2105.07576).
"""
import contextlib
import math
import time

import numpy as np

from machinery.data import training_image_count
from machinery.fast import uint8_batches
from machinery.outputs import BATCHNORM_STATISTICS_PNG
from machinery.quiet import filtered_stderr, keras, tf

# A gap of more than this (5 percentage points) between validation accuracy with
# moving and with batch statistics gets the note.
NOTE_GAP = 0.05


def norm_layers(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def scaled(images):
    """uint8 (N, 28, 28) images as preprocess() makes them: float32 (N, 28, 28, 1) / 255,
    the values fast.uint8_batches gives, bit for bit."""
    return images.reshape(*images.shape, 1).astype("float32") / 255


def scaled_batches(images, labels, batch_size):
    """(scaled images, int32 labels) in order, batch by batch, without a tf.data pipeline:
    each new pipeline traces its map function again."""
    for start in range(0, len(images), batch_size):
        yield (scaled(images[start:start + batch_size]),
               labels[start:start + batch_size].astype(np.int32))


@contextlib.contextmanager
def moving_statistics_kept(model):
    """Put every non-trainable variable (the moving statistics) back as it was: a
    training-mode call moves them."""
    saved = [variable.numpy() for variable in model.non_trainable_variables]
    try:
        yield
    finally:
        for variable, value in zip(model.non_trainable_variables, saved):
            variable.assign(value)


def evaluate_with_batch_statistics(model, images, labels, batch_size):
    """Accuracy and loss on uint8 images with every BatchNormalization layer using the
    batch's own statistics (training mode), as in training; every variable is left as
    it was."""
    correct, loss_sum = 0, 0.0
    with moving_statistics_kept(model):
        for x, y in scaled_batches(images, labels, batch_size):
            probabilities = model(x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
            loss_sum += float(tf.reduce_sum(loss))
            correct += int(tf.reduce_sum(tf.cast(
                tf.argmax(probabilities, axis=-1, output_type=tf.int32) == y, tf.int32)))
    return correct / len(images), loss_sum / len(images)


def recompute_moving_statistics(model, images, batch_size):
    """Set each BatchNormalization layer's moving mean and variance to the mean and
    variance of its inputs over `images` (uint8) under the final weights, layer by
    layer from the input up, so each layer sees the inputs inference will give it."""
    for layer in norm_layers(model):
        upstream = keras.Model(model.inputs[0], layer.input)
        count, total, total_squares = 0, 0.0, 0.0
        for x, _ in uint8_batches(images, np.zeros(len(images), np.int32), batch_size):
            features = upstream(x, training=False).numpy().astype(np.float64)
            features = features.reshape(-1, features.shape[-1])
            count += len(features)
            total = total + features.sum(axis=0)
            total_squares = total_squares + np.square(features).sum(axis=0)
        mean = total / count
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_squares / count - mean ** 2, 0)
                                     .astype(np.float32))


def layer_inputs(model):
    """A model from `model`'s input to the inputs of its BatchNormalization layers."""
    return keras.Model(model.inputs[0], [layer.input for layer in norm_layers(model)])


def layer_statistics(model, probe, inputs_model=None):
    """For each BatchNormalization layer: its channel-averaged moving mean and variance,
    and the channel-averaged mean and variance of the probe batch's inputs to it in
    training mode (what the layer normalises with). Variables are left as they were."""
    norms = norm_layers(model)
    with moving_statistics_kept(model):
        inputs = (inputs_model or layer_inputs(model))(probe, training=True)
    rows = []
    for layer, features in zip(norms, inputs):
        features = features.numpy().reshape(-1, features.shape[-1])
        rows.append({"moving_mean": float(np.mean(layer.moving_mean.numpy())),
                     "moving_variance": float(np.mean(layer.moving_variance.numpy())),
                     "batch_mean": float(features.mean(axis=0).mean()),
                     "batch_variance": float(features.var(axis=0).mean())})
    return rows


class Monitor(keras.callbacks.Callback):
    """After each epoch: every layer's statistics (for batchnorm_statistics.png) and,
    when asked, validation accuracy and loss with batch statistics, put into the epoch's
    logs ahead of CSVLogger so that history.csv and history.json hold them."""

    def __init__(self, probe, validation, batch_size, track_validation, pictures=None):
        super().__init__()
        self.probe, self.validation, self.batch_size = probe, validation, batch_size
        self.track_validation, self.pictures = track_validation, pictures
        self.statistics, self.inputs_model = [], None

    def on_epoch_end(self, epoch, logs=None):
        if not norm_layers(self.model):
            return
        self.inputs_model = self.inputs_model or layer_inputs(self.model)  # built once
        self.statistics.append(layer_statistics(self.model, self.probe, self.inputs_model))
        if self.track_validation and logs is not None:
            accuracy, loss = evaluate_with_batch_statistics(self.model, *self.validation,
                                                            self.batch_size)
            logs["val_accuracy_batch_stats"], logs["val_loss_batch_stats"] = accuracy, loss

    def on_train_end(self, logs=None):
        """The picture of the statistics, drawn beside the evaluation that follows."""
        if self.pictures is not None and self.statistics:
            self.pictures.ask(BATCHNORM_STATISTICS_PNG, "plot_batchnorm_statistics",
                              self.statistics)


def monitor(x_train, y_train, config, pictures=None):
    """The Monitor for a run: the probe is the first batch of training images."""
    split_at = training_image_count(len(x_train), config["validation_split"])
    probe = scaled(x_train[:config["batch_size"]])
    return Monitor(probe, (x_train[split_at:], y_train[split_at:]), config["batch_size"],
                   config["track_batch_stats"], pictures)


def as_fit_validated(images, labels, config):
    """evaluate's inputs for uint8 images in the form fit validated (--fast: the uint8
    pipeline; else float32 arrays scaled as preprocess() scales, labels as they are), so
    that evaluate reuses fit's traced test function: other input types trace it again."""
    if config["fast"] is not None:
        return dict(x=uint8_batches(images, labels, config["batch_size"]))
    return dict(x=scaled(images), y=labels, batch_size=config["batch_size"])


def diagnose(model, x_train, y_train, config, epochs):
    """Validation accuracy with moving and with batch statistics, as run.json records it;
    prints the note when they differ by more than NOTE_GAP. None without BatchNormalization."""
    if not norm_layers(model):
        return None
    start = time.perf_counter()
    split_at = training_image_count(len(x_train), config["validation_split"])
    images, labels = x_train[split_at:], y_train[split_at:]
    with filtered_stderr():  # a new tf.data pipeline repeats fit's start-up line
        moving_loss, moving_accuracy = (float(v) for v in model.evaluate(
            **as_fit_validated(images, labels, config), verbose=0))
    batch_accuracy, batch_loss = evaluate_with_batch_statistics(model, images, labels,
                                                               config["batch_size"])
    steps = epochs * math.ceil(split_at / config["batch_size"])
    result = {"val_accuracy_moving_statistics": moving_accuracy,
              "val_loss_moving_statistics": moving_loss,
              "val_accuracy_batch_statistics": batch_accuracy,
              "val_loss_batch_statistics": batch_loss,
              "recomputed": config["recompute_bn_stats"], "training_steps": steps,
              "momentum": config["bn_momentum"],
              "momentum_power_steps": config["bn_momentum"] ** steps,
              "seconds": time.perf_counter() - start}
    result["note"] = note(result)
    if result["note"]:
        print(result["note"])
    return result


def note(result):
    """What to tell the user when inference's statistics lag the batch's, or None."""
    gap = result["val_accuracy_batch_statistics"] - result["val_accuracy_moving_statistics"]
    if abs(gap) <= NOTE_GAP:
        return None
    momentum, steps = result["momentum"], result["training_steps"]
    return (
        f"Note: validation accuracy is {result['val_accuracy_moving_statistics']:.4f} with "
        f"BatchNormalization's moving statistics (what inference uses) but "
        f"{result['val_accuracy_batch_statistics']:.4f} with each batch's own statistics: "
        f"the moving averages lag. This run made {steps} training step"
        f"{'' if steps == 1 else 's'} at momentum "
        f"{momentum}, so {momentum}^{steps} = {momentum ** steps:.1%} of their starting values "
        "(mean 0, variance 1) is still in them, and they trail the changing weights. "
        "Remedies: --bn-momentum 0.9 (they forget faster), or --recompute-bn-stats "
        "(recomputed from the training images after training). "
        "See docs/batchnorm-statistics.md."
    )


def recompute_from_training_images(model, x_train, config):
    """--recompute-bn-stats: the moving statistics of the training images (not the
    validation ones) under the final weights."""
    split_at = training_image_count(len(x_train), config["validation_split"])
    recompute_moving_statistics(model, x_train[:split_at], config["batch_size"])
