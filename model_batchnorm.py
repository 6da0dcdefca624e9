"""The lesson: a Keras CNN with Batch Normalization, trained on Kuzushiji-MNIST.

`python model_batchnorm.py` is the lesson's run, exactly: load KMNIST, scale it,
build two convolutional blocks with BatchNormalization, train with Adam and
sparse categorical cross-entropy (batch 250, 25 epochs, the last 20% of the
training images for validation), test, print the result and plot the history.

This file holds the lesson's steps in the lesson's order. The flags (docs/flags-and-outputs.md,
`--help`) add smoke runs, offline data, resuming, Kuzushiji-49, a comparison
without BatchNormalization, --fast, --precision, --distribute and --predict (the
trained model on your own images); their machinery lives in the package
`machinery/`, one module per job.
"""
import sys
import time

from machinery import cli  # imports no TensorFlow

# The lesson's configuration; the flags default to these. "no_" means "number of".
img_width, img_height = 28, 28
input_shape = (img_width, img_height, 1)
batch_size = 250
no_epochs = 25
no_classes = 10
validation_split = 0.2
verbosity = 1
learning_rate = 0.001  # Adam's default, which the lesson keeps
flag_defaults = dict(epochs=no_epochs, batch_size=batch_size, validation_split=validation_split,
                     verbosity=verbosity, learning_rate=learning_rate)

if __name__ == "__main__":  # --help and a mistyped flag answer before the slow import below
    cli.check_flags_first(sys.argv[1:], flag_defaults)

# TensorFlow, with its start-up lines kept off the screen, then the lesson's Keras.
import machinery.quiet  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

import plot_history  # noqa: E402
from machinery import (batchnorm_stats, callbacks, compare, data, distribute,  # noqa: E402
                       fast, files, predict, record, session, settings, startup)


def load_data(dataset="kmnist", data_dir=None, redownload=False):
    """KMNIST through extra-keras-datasets, `kmnist.load_data(type='kmnist')` (or the
    official files in data_dir), checked: (x_train, y_train), (x_test, y_test)."""
    return data.load(dataset, data_dir, redownload)


def preprocess(x):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], in the lesson's order."""
    x = x.reshape(x.shape[0], img_width, img_height, 1)
    x = x.astype("float32")
    return x / 255


def build_model(input_shape, no_classes, batchnorm=True,
                norm_layer=layers.BatchNormalization, network=None):
    """The lesson's network. batchnorm=False drops its five BatchNormalization layers
    (--no-batchnorm); --fast passes a fused norm_layer that computes the same; --compare's
    other networks (machinery/networks.py) build themselves, `network`, from this one."""
    if network is not None:
        return network(build_model, input_shape, no_classes, norm_layer)

    def norm():
        return [norm_layer()] if batchnorm else []

    return keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            *norm(),
            layers.MaxPooling2D(pool_size=(2, 2)),
            *norm(),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            *norm(),
            layers.MaxPooling2D(pool_size=(2, 2)),
            *norm(),
            layers.Flatten(),
            layers.Dense(256, activation="relu"),
            *norm(),
            layers.Dense(no_classes, activation="softmax"),
        ],
        name="batchnorm_cnn" if batchnorm else "plain_cnn",
    )


def compile_model(model, steps_per_execution=1, learning_rate=learning_rate):
    model.compile(
        loss=keras.losses.sparse_categorical_crossentropy,
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )
    return model


def train(model, x_train, y_train, run, callbacks):
    """The lesson's fit: Keras holds out the last validation_split of the images."""
    if run.fast:  # the same images and split, as a faster pipeline
        inputs = fast.fit_inputs(x_train, y_train, run)
    else:
        inputs = dict(x=preprocess(x_train), y=y_train, batch_size=run.batch_size,
                      validation_split=run.validation_split)
    return model.fit(**inputs, epochs=run.epochs, verbose=run.verbose, callbacks=callbacks)


def test(model, x_test, y_test, run):
    """Evaluate on the test images and print the lesson's line."""
    if run.fast:
        inputs = fast.evaluate_inputs(x_test, y_test, run)
    else:
        inputs = dict(x=preprocess(x_test), y=y_test)
    with machinery.quiet.filtered_stderr():  # a new tf.data pipeline repeats fit's start-up line
        start = time.perf_counter()
        test_loss, test_accuracy = (float(v) for v in model.evaluate(**inputs, verbose=0))
        seconds = time.perf_counter() - start
        predicted = model.predict(inputs["x"], batch_size=run.batch_size, verbose=0)
    print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")
    return {"test_loss": test_loss, "test_accuracy": test_accuracy,
            "predicted": predicted.argmax(axis=1), "evaluation_seconds": seconds}


def make_model(run):
    """The lesson's network as `run` (its settings) asks for it, compiled."""
    norm_class = fast.FusedBatchNormalization if run.fast else layers.BatchNormalization
    with distribute.scope(run.strategy), fast.precision_policy(run.precision):
        model = build_model(input_shape, run.classes, run.batchnorm,
                            lambda **options: norm_class(momentum=run.bn_momentum, **options,
                                                         **distribute.norm_options(run)),
                            run.network and run.network.build)
        compile_model(model, run.steps_per_execution, run.learning_rate)
    return distribute.work_around_keras_distribution_bugs(model, run.strategy)


def train_and_test(run, arrays):
    """Build, train (resumably), test and save one model; returns the run's result."""
    (x_train, y_train), (x_test, y_test) = arrays
    model = startup.built_for_fit(make_model(run), run.strategy)  # fit traces once
    with session.resumable(run, arrays) as fit:  # a backup after every epoch
        history = train(model, x_train, y_train, run, callbacks.for_run(run, x_train, fit))
    history.history = fit.history  # every epoch, those before a resume too
    # Moving statistics lag on short runs: see docs/batchnorm-statistics.md.
    if run.recompute_bn_stats:  # recomputed from the final weights
        batchnorm_stats.recompute_from_training_images(model, x_train, run)
    evaluation = test(model, x_test, y_test, run)
    # Prints a note when inference's moving statistics lag the batches'.
    evaluation["batchnorm_diagnosis"] = batchnorm_stats.diagnose(
        model, x_train, y_train, run, epochs=len(history.history["loss"]))
    if run.pictures:
        plot_history.plot_history(history, run.output_dir / files.TRAINING_HISTORY_PNG)
    return record.save_run(run, model, evaluation, arrays, fit)


def dry_run(run, arrays):
    (x_train, _), (x_test, _) = arrays
    model = make_model(run)
    model.summary()
    print(f"Dry run: flags, output folder and {len(x_train):,}/{len(x_test):,} "
          "images are fine; nothing was trained.")
    return {"dry_run": True, "parameters": model.count_params()}


def main(argv=None):
    """The run the flags ask for; returns its result, raises ScriptError on bad input."""
    args = cli.parse_args(argv, flag_defaults)
    if args.predict:  # the trained model on your own images: trains and writes nothing
        return predict.classify(args.predict, preprocess)
    with startup.prepared(args) as place:  # the output folder, devices, seeds
        loaded = load_data(args.dataset, args.data_dir, args.redownload)
        # Every setting of the run, made once: --limit's images, the split, the classes.
        run, run_data = settings.for_run(args, place, loaded, preprocess)
        if args.dry_run:
            return dry_run(run, run_data)
        if run.compare:
            return compare.compare(run, run_data, train_and_test)
        return train_and_test(run, run_data)


if __name__ == "__main__":
    sys.exit(cli.run(main))
