"""The lesson's own code path, as a speed baseline for bench/benchmark.py: exactly the
lesson's steps (reshape, float32, /255; the Sequential network; Adam; fit with
validation_split; evaluate) with none of the project's machinery: no backup, no
log, no diagnosis, no pictures. Only an epoch timer is added, to be measured.

    python bench/lesson_script.py --data-dir DIR --epochs 3 --output-dir OUT [--seed N]
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import machinery.quiet  # noqa: E402,F401  (TensorFlow's start-up lines, as the project)
import keras  # noqa: E402
import tensorflow as tf  # noqa: E402
from keras import layers  # noqa: E402

from machinery.datasets import folder_paths  # noqa: E402


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start[0])
        self.cpu_seconds.append(time.process_time() - self.start[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for flag, kind in (("--data-dir", Path), ("--epochs", int), ("--output-dir", Path),
                       ("--seed", int), ("--verbose", int)):
        parser.add_argument(flag, type=kind)
    parser.add_argument("--bn-momentum", type=float, default=0.99,
                        help="the benchmark's accuracy columns only (the lesson's is 0.99)")
    parser.add_argument("--no-plot", action="store_true", help="accepted for the harness")
    args = parser.parse_args()
    if args.seed is not None:  # as model_batchnorm.py --seed does, for a fair comparison
        keras.utils.set_random_seed(args.seed)
        tf.config.experimental.enable_op_determinism()
    arrays = {part: np.load(path)["arr_0"] for part, path in folder_paths(args.data_dir).items()}
    x_train, y_train = arrays["train_imgs"], arrays["train_labels"]
    x_test, y_test = arrays["test_imgs"], arrays["test_labels"]

    x_train = x_train.reshape(x_train.shape[0], 28, 28, 1).astype("float32") / 255
    x_test = x_test.reshape(x_test.shape[0], 28, 28, 1).astype("float32") / 255
    model = keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.BatchNormalization(momentum=args.bn_momentum),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.BatchNormalization(momentum=args.bn_momentum),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.BatchNormalization(momentum=args.bn_momentum),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.BatchNormalization(momentum=args.bn_momentum),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.BatchNormalization(momentum=args.bn_momentum),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(loss=keras.losses.sparse_categorical_crossentropy,
                  optimizer=keras.optimizers.Adam(), metrics=["accuracy"])
    timer = EpochTimer()
    history = model.fit(x_train, y_train, batch_size=250, epochs=args.epochs,
                        verbose=args.verbose, validation_split=0.2, callbacks=[timer])
    start = time.perf_counter()
    test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    evaluation_seconds = time.perf_counter() - start
    print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "history.json").write_text(json.dumps(history.history))
    (args.output_dir / "run.json").write_text(json.dumps({
        "test_loss": test_loss, "test_accuracy": test_accuracy,
        "train_images": int(len(x_train) * 0.8), "epoch_seconds": timer.seconds,
        "epoch_cpu_seconds": timer.cpu_seconds,
        "evaluation_seconds": evaluation_seconds,
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
