"""BatchNormalization's two kinds of statistics: training normalises with each batch's
own, inference with moving averages that after few steps still hold much of their start
(mean 0, variance 1). Measures the gap (the diagnosis, its note), records the statistics
for their picture, and recomputes the moving ones from the final weights ("precise BN",
Wu & Johnson 2021, arXiv:2105.07576)."""
import contextlib
import math
import time

import numpy as np

import plot_history
from machinery.fast import uint8_batches
from machinery.files import BATCHNORM_STATISTICS_PNG
from machinery.quiet import filtered_stderr, keras, tf

# A gap of more than this (5 percentage points) between validation accuracy with
# moving and with batch statistics gets the note.
NOTE_GAP = 0.05


def norm_layers(model):
    return [layer for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)]


def scaled_batches(images, labels, batch_size, preprocess):
    """(images scaled by the lesson's preprocess, int32 labels) in order, batch by batch,
    without a tf.data pipeline: each new pipeline traces its map function again."""
    for start in range(0, len(images), batch_size):
        yield (preprocess(images[start:start + batch_size]),
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


def evaluate_with_batch_statistics(model, images, labels, batch_size, preprocess):
    """Accuracy and loss on uint8 images, each batch normalised with its own statistics
    (training mode) as in training; every variable is left as it was."""
    correct, loss_sum = 0, 0.0
    with moving_statistics_kept(model):
        for x, y in scaled_batches(images, labels, batch_size, preprocess):
            probabilities = model(x, training=True)
            loss = keras.losses.sparse_categorical_crossentropy(y, probabilities)
            loss_sum += float(tf.reduce_sum(loss))
            correct += int(tf.reduce_sum(tf.cast(
                tf.argmax(probabilities, axis=-1, output_type=tf.int32) == y, tf.int32)))
    return correct / len(images), loss_sum / len(images)


def recompute_moving_statistics(model, images, batch_size, preprocess):
    """Each BatchNormalization layer's moving mean and variance set to those of its inputs
    over `images` (uint8), layer by layer from the input up: each sees what inference
    will give it."""
    for layer in norm_layers(model):
        upstream = keras.Model(model.inputs[0], layer.input)
        count, total, total_squares = 0, 0.0, 0.0
        for x, _ in scaled_batches(images, np.zeros(len(images), np.int32), batch_size,
                                   preprocess):
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
    """Per BatchNormalization layer, averaged over channels: its moving mean and variance,
    and those of the probe batch's inputs in training mode (what it normalises with)."""
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
    """After each epoch, every layer's statistics (batchnorm_statistics.png) and, if asked,
    validation accuracy and loss with batch statistics, in the epoch's logs ahead of
    CSVLogger: history.csv and history.json hold them."""

    def __init__(self, probe, validation, run, pictures=None):
        super().__init__()
        self.probe, self.validation, self.run, self.pictures = probe, validation, run, pictures
        self.statistics, self.inputs_model = [], None

    def on_epoch_end(self, epoch, logs=None):
        if not norm_layers(self.model):
            return
        self.inputs_model = self.inputs_model or layer_inputs(self.model)  # built once
        self.statistics.append(layer_statistics(self.model, self.probe, self.inputs_model))
        if self.run.track_batch_stats and logs is not None:
            accuracy, loss = evaluate_with_batch_statistics(
                self.model, *self.validation, self.run.batch_size, self.run.preprocess)
            logs["val_accuracy_batch_stats"], logs["val_loss_batch_stats"] = accuracy, loss

    def on_train_end(self, logs=None):
        """The picture of the statistics, drawn beside the evaluation that follows."""
        if self.pictures is not None and self.statistics:
            self.pictures.ask(BATCHNORM_STATISTICS_PNG, plot_history.plot_batchnorm_statistics,
                              self.statistics)


def monitor(x_train, y_train, run, pictures=None):
    """The Monitor for a run: the probe is the first batch of training images."""
    probe = run.preprocess(x_train[:run.batch_size])
    return Monitor(probe, (x_train[run.split_at:], y_train[run.split_at:]), run, pictures)


def as_fit_validated(images, labels, run):
    """evaluate's inputs in the form fit validated (--fast: the uint8 pipeline), so that
    evaluate reuses fit's traced test function: other input types trace it again."""
    if run.fast:
        return dict(x=uint8_batches(images, labels, run.batch_size, run.preprocess))
    return dict(x=run.preprocess(images), y=labels, batch_size=run.batch_size)


def diagnose(model, x_train, y_train, run, epochs):
    """Validation accuracy with moving and with batch statistics, as run.json records it;
    prints the note when they differ by more than NOTE_GAP. None without BatchNormalization."""
    if not norm_layers(model):
        return None
    start = time.perf_counter()
    images, labels = x_train[run.split_at:], y_train[run.split_at:]
    with filtered_stderr():  # a new tf.data pipeline repeats fit's start-up line
        moving_loss, moving_accuracy = (float(v) for v in model.evaluate(
            **as_fit_validated(images, labels, run), verbose=0))
    batch_accuracy, batch_loss = evaluate_with_batch_statistics(
        model, images, labels, run.batch_size, run.preprocess)
    steps = epochs * math.ceil(run.split_at / run.batch_size)
    result = {"val_accuracy_moving_statistics": moving_accuracy,
              "val_loss_moving_statistics": moving_loss,
              "val_accuracy_batch_statistics": batch_accuracy,
              "val_loss_batch_statistics": batch_loss,
              "recomputed": run.recompute_bn_stats, "training_steps": steps,
              "momentum": run.bn_momentum, "momentum_power_steps": run.bn_momentum ** steps,
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


def recompute_from_training_images(model, x_train, run):
    """--recompute-bn-stats, from the training images (not the validation ones)."""
    recompute_moving_statistics(model, x_train[:run.split_at], run.batch_size, run.preprocess)
