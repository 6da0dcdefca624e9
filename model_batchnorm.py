"""A Keras CNN with Batch Normalization, trained on Kuzushiji-MNIST (KMNIST).

`python model_batchnorm.py` runs the lesson exactly as documented: two
convolutional blocks with BatchNormalization, Adam, sparse categorical
cross-entropy, batch 250, 25 epochs, 20% of the training images held out for
validation. The flags (see `--help` and README.md) add smoke runs, offline
data, resuming after an interruption, Kuzushiji-49, a side-by-side comparison
with the same network without BatchNormalization, a faster execution of the
same computation (--fast) and tf.distribute training (--distribute).

Sections, in the lesson's order: configuration, data, model, training,
evaluation and outputs, then the comparison and the command line.
"""
import argparse
import contextlib
import csv
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Level 1 hides the C++ core's INFO lines; its warnings and errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

# TensorFlow writes these to the native stderr on every start, before any log
# level applies. They describe the build and the machine, never the run.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "failed call to cuInit",
    # tf.data under op determinism (--seed), once, as fit builds its pipeline
    "NodeDef mentions attribute use_unbounded_threadpool",
)


@contextlib.contextmanager
def filtered_stderr(noise=STARTUP_NOISE):
    """Drop the known start-up lines from file descriptor 2; pass every other line on."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to filter
        yield
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(True):
                if not any(text in line for text in noise):
                    sys.stderr.write(line)
            sys.stderr.flush()


with filtered_stderr():
    import keras
    import tensorflow as tf
    from keras import layers

import plot_history

# ---------------------------------------------------------------------------
# Configuration: the lesson's values. The command-line flags default to these.
# ---------------------------------------------------------------------------
img_width, img_height = 28, 28
input_shape = (img_width, img_height, 1)
batch_size = 250
no_epochs = 25
no_classes = 10
validation_split = 0.2
verbosity = 1

# Official sizes, used to tell the user when a data folder holds a subset.
DATASETS = {
    "kmnist": {"classes": 10, "train": 60_000, "test": 10_000},
    "k49": {"classes": 49, "train": 232_365, "test": 38_547},
}
# KMNIST class index -> (hiragana, romanization).
CLASS_NAMES = [
    ("お", "o"), ("き", "ki"), ("す", "su"), ("つ", "tsu"), ("な", "na"),
    ("は", "ha"), ("ま", "ma"), ("や", "ya"), ("れ", "re"), ("を", "wo"),
]
PARTS = ("train_imgs", "train_labels", "test_imgs", "test_labels")
DATASET_HOME = "http://codh.rois.ac.jp/kmnist/"


class ScriptError(Exception):
    """A problem the user can fix: shown as one line, the process exits with `code`."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
def official_file_names(dataset):
    """The names the dataset's site gives its four files, e.g. kmnist-train-imgs.npz."""
    return {part: f"{dataset}-{part.replace('_', '-')}.npz" for part in PARTS}


def keras_cache_dir():
    """The folder where keras.utils.get_file, and so extra-keras-datasets, caches downloads."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK):  # get_file falls back the same way
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "datasets"


def cache_files(dataset):
    """The four cache paths extra-keras-datasets reads for `dataset`."""
    return {part: keras_cache_dir() / f"kmnist.npz_{dataset}_{part}" for part in PARTS}


def check_npz(path, fix):
    """Read only the header of the array in an .npz; refuse anything numpy would unpickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "arr_0.npy" not in archive.namelist():
                raise ScriptError(
                    f"{path} has no array 'arr_0' (it holds {archive.namelist()}), "
                    f"so it is not a KMNIST file: {fix}"
                )
            with archive.open("arr_0.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _, _, dtype = read_header(member)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is truncated or not an .npz archive ({err}): {fix}") from None
    if dtype.hasobject:
        raise ScriptError(
            f"{path} holds Python objects, which would have to be unpickled to be read; "
            f"refusing it: {fix}"
        )


def read_npz(path, fix):
    check_npz(path, fix)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["arr_0"]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is damaged ({err}): {fix}") from None


def load_from_folder(dataset, data_dir):
    """Read the four official .npz files from `data_dir`, with no network at all."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ScriptError(
            f"--data-dir {folder} is not a folder: create it and put the four "
            f"{dataset} .npz files from {DATASET_HOME} in it"
        )
    names = official_file_names(dataset)
    missing = [name for name in names.values() if not (folder / name).is_file()]
    if missing:
        raise ScriptError(
            f"--data-dir {folder} lacks {', '.join(missing)}: download them from "
            f"{DATASET_HOME} into that folder"
        )
    fix = f"replace it with the official file from {DATASET_HOME}"
    arrays = {part: read_npz(folder / name, fix) for part, name in names.items()}
    return {part: folder / name for part, name in names.items()}, arrays


@contextlib.contextmanager
def quiet_package_logging():
    """extra-keras-datasets turns the root logger to INFO; keep its citation, drop the rest."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logging.disable(logging.INFO)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)
        root.handlers[:] = handlers
        root.setLevel(level)


def load_with_package(dataset, redownload=False):
    """Load through extra-keras-datasets, which downloads into the Keras cache once."""
    from extra_keras_datasets import kmnist

    files = cache_files(dataset)
    if redownload:
        for path in files.values():
            path.unlink(missing_ok=True)
    fix = "run again with --redownload to replace it"
    for path in files.values():
        if path.exists():
            check_npz(path, fix)
    try:
        with quiet_package_logging():
            (x_train, y_train), (x_test, y_test) = kmnist.load_data(type=dataset)
    except Exception as err:  # the package raises bare Exception for failed downloads
        if "URL fetch failure" in str(err):
            cache = keras_cache_dir()
            raise ScriptError(
                f"could not download {dataset.upper()} ({err}). Offline? Put the four "
                f"files from {DATASET_HOME} ({', '.join(official_file_names(dataset).values())}) "
                f"in a folder and pass --data-dir FOLDER, or copy them into {cache} "
                f"as {', '.join(p.name for p in files.values())}"
            ) from None
        raise ScriptError(
            f"could not read the cached {dataset} files in {keras_cache_dir()} "
            f"({type(err).__name__}: {err}): {fix}"
        ) from None
    arrays = dict(zip(PARTS, (x_train, y_train, x_test, y_test)))
    return files, arrays


def check_arrays(arrays, sources, classes):
    """Stop with a message naming the file if the arrays are not KMNIST-shaped."""
    for kind in ("train", "test"):
        images, labels = arrays[f"{kind}_imgs"], arrays[f"{kind}_labels"]
        image_file, label_file = sources[f"{kind}_imgs"], sources[f"{kind}_labels"]
        problem = None
        if images.dtype != np.uint8:
            problem = f"{image_file}: images are {images.dtype}, expected uint8"
        elif images.ndim != 3 or images.shape[1:] != (img_width, img_height):
            problem = f"{image_file}: images have shape {images.shape}, expected (N, 28, 28)"
        elif len(images) == 0:
            problem = f"{image_file} holds no images"
        elif not np.issubdtype(labels.dtype, np.integer):
            problem = f"{label_file}: labels are {labels.dtype}, expected integers"
        elif labels.ndim != 1:
            problem = f"{label_file}: labels have shape {labels.shape}, expected (N,)"
        elif len(labels) != len(images):
            problem = (
                f"{label_file} holds {len(labels)} labels but {image_file} holds "
                f"{len(images)} images"
            )
        elif labels.min() < 0 or labels.max() >= classes:
            problem = (
                f"{label_file}: labels run from {labels.min()} to {labels.max()}, "
                f"expected 0 to {classes - 1}"
            )
        if problem:
            raise ScriptError(f"{problem}: use the official files from {DATASET_HOME}")


def load_data(dataset="kmnist", data_dir=None, redownload=False):
    """Return (x_train, y_train), (x_test, y_test) as uint8 images and integer labels."""
    if data_dir is None:
        sources, arrays = load_with_package(dataset, redownload)
    else:
        sources, arrays = load_from_folder(dataset, data_dir)
    check_arrays(arrays, sources, DATASETS[dataset]["classes"])
    return (arrays["train_imgs"], arrays["train_labels"]), (
        arrays["test_imgs"], arrays["test_labels"])


def training_count(images, split):
    """How many of `images` training images fit() trains on: Keras holds out the last
    `split` of them, rounding the training share down."""
    return int(images * (1 - split))


def preprocess(x):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1], in the lesson's order."""
    x = x.reshape(x.shape[0], img_width, img_height, 1)
    x = x.astype("float32")
    return x / 255


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package="model_batchnorm")
class FusedBatchNormalization(layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel.

    Keras 3 computes batch normalization as several small ops; TensorFlow's
    FusedBatchNormV3 does it in one. Same variables, defaults and results
    (tests/test_fast.py) with one documented difference: the fused op feeds the
    unbiased batch variance (n / (n - 1) times Keras' biased one) into the moving
    variance. Dense outputs (N, C) pass through it as (N, 1, 1, C). Used by --fast.
    """

    def call(self, inputs, training=None, mask=None):
        if mask is not None or self.renorm or self.axis not in (-1, len(inputs.shape) - 1):
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = tf.cast(inputs, "float32")
        if len(inputs.shape) == 2:
            x = tf.reshape(x, (-1, 1, 1, inputs.shape[-1]))
        arguments = dict(x=x, scale=self.gamma, offset=self.beta, mean=self.moving_mean,
                         variance=self.moving_variance, epsilon=self.epsilon)
        if training and self.trainable:
            y, moving_mean, moving_variance = tf.compat.v1.nn.fused_batch_norm(
                **arguments, is_training=True, exponential_avg_factor=1.0 - self.momentum)
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(**arguments, is_training=False)
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)


def build_model(input_shape, no_classes, batchnorm=True, fused=False):
    """The lesson's network; batchnorm=False drops its five BatchNormalization layers,
    fused=True computes them with FusedBatchNormalization (--fast)."""
    norm_layer = FusedBatchNormalization if fused else layers.BatchNormalization

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


def compile_model(model, fast=False):
    model.compile(
        loss=keras.losses.sparse_categorical_crossentropy,
        optimizer=keras.optimizers.Adam(),
        metrics=["accuracy"],
        steps_per_execution=FAST_STEPS_PER_EXECUTION if fast else 1,
    )
    return model


# ---------------------------------------------------------------------------
# --fast: the same model and optimisation, executed faster
# ---------------------------------------------------------------------------
# Each choice was measured with bench/benchmark.py and kept because it helped
# on a CPU (README, "Speed"): fused BatchNormalization, uint8 images scaled in
# a prefetching tf.data pipeline, and several steps per call into TensorFlow.
# XLA (jit_compile) and bfloat16 were measured too, and did not help.
FAST_STEPS_PER_EXECUTION = 16
FAST_PATH = {"fused_batchnorm": True, "uint8_tf_data_pipeline": True,
             "steps_per_execution": FAST_STEPS_PER_EXECUTION, "xla": False,
             "mixed_precision": False}


def uint8_batches(images, labels, batch_size, shuffle=False):
    """Batches of uint8 images, scaled to float32 in [0, 1] on the fly and prefetched.

    The scaling is preprocess()'s, bit for bit; uint8 in memory takes a quarter
    of the space of a float32 copy."""
    images, labels = tf.constant(images), tf.constant(labels)
    order = tf.data.Dataset.range(images.shape[0])
    if shuffle:  # fit() shuffles its arrays every epoch; so does this
        order = order.shuffle(images.shape[0], reshuffle_each_iteration=True)

    def load(index):
        x = tf.cast(tf.gather(images, index), tf.float32) / 255
        return tf.expand_dims(x, -1), tf.cast(tf.gather(labels, index), tf.int32)

    return (order.batch(batch_size)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fit_inputs(args, x_train, y_train):
    """What model.fit gets: the lesson's float arrays with validation_split, or pipelines."""
    if not args.fast:
        return dict(x=preprocess(x_train), y=y_train, batch_size=args.batch_size,
                    validation_split=args.validation_split)
    split_at = training_count(len(x_train), args.validation_split)
    return dict(
        x=uint8_batches(x_train[:split_at], y_train[:split_at], args.batch_size, shuffle=True),
        validation_data=uint8_batches(x_train[split_at:], y_train[split_at:], args.batch_size),
        shuffle=False,  # the pipeline shuffles
    )


def test_inputs(args, x_test, y_test):
    if not args.fast:
        return dict(x=preprocess(x_test), y=y_test)
    return dict(x=uint8_batches(x_test, y_test, args.batch_size))


# ---------------------------------------------------------------------------
# Beyond one device: --distribute
# ---------------------------------------------------------------------------
def make_strategy(kind, cpu_devices=2):
    """The tf.distribute strategy for --distribute, or None. Must run before
    TensorFlow starts its devices, so main() calls it first."""
    if kind is None:
        return None
    if kind == "multiworker":
        try:
            json.loads(os.environ["TF_CONFIG"])
        except KeyError:
            raise ScriptError("--distribute multiworker needs the cluster in the TF_CONFIG "
                              "environment variable: see README, 'Several machines'") from None
        except ValueError as err:
            raise ScriptError(f"TF_CONFIG is not valid JSON ({err}): see README, "
                              "'Several machines'") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def is_chief(strategy):
    """Only one process writes the output folder: the chief, or worker 0 if none is named."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    return (resolver.task_type in (None, "chief")
            or (resolver.task_type == "worker" and resolver.task_id == 0
                and "chief" not in resolver.cluster_spec().as_dict()))


def work_around_keras_multiworker(model, strategy):
    """Two Keras 3.15 bugs under MultiWorkerMirroredStrategy, worked around on this
    model only (tests/test_distribute.py would fail if either came back):
    1. Before the first step, fit/evaluate/predict average the whole first
       distributed batch with strategy.reduce, which this strategy rejects. The
       model is already built from keras.Input; its loss and metrics only need the
       shapes, which one replica's local batch gives.
    2. Each step's logs are averaged with strategy.reduce("MEAN", v, axis=0), which
       fails on scalars. Returned with shape (1,), they average to the scalar mean
       across workers."""
    keras_build = model._maybe_symbolic_build

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches))
                break
        return keras_build(data_batch=data_batch)

    def with_shaped_logs(step):
        return lambda data: tf.nest.map_structure(lambda v: tf.reshape(v, (1,)), step(data))

    model._maybe_symbolic_build = build
    model.train_step = with_shaped_logs(model.train_step)
    model.test_step = with_shaped_logs(model.test_step)
    return model


def distribution_scope(args):
    return args.strategy.scope() if args.strategy else contextlib.nullcontext()


# ---------------------------------------------------------------------------
# Training, backed up after every epoch so that an interrupted run resumes
# ---------------------------------------------------------------------------
HISTORY_CSV = "history.csv"
BACKUP_DIR = "backup"


def write_json(path, data):
    """Write JSON through a temporary file, so a crash never leaves half a file."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(partial, path)


def read_history_csv(path):
    """The per-epoch log as a History.history-style dict of lists."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [key for key in (rows[0] if rows else {}) if key != "epoch"]
    return {key: [float(row[key]) for row in rows] for key in keys}


def keep_first_rows(path, count):
    """Drop log rows of epochs the backup does not hold (killed between log and backup)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text("".join(lines[: count + 1]))
    os.replace(partial, path)


def backup_config(args, batchnorm):
    """What a backup must share with this run to be resumed by it."""
    return {
        "dataset": args.dataset,
        "batchnorm": batchnorm,
        "batch_size": args.batch_size,
        "validation_split": args.validation_split,
        "limit": args.limit,
    }


def prepare_resume(out, config, restart=False):
    """Return how many epochs the backup in `out` already holds; 0 starts afresh."""
    backup, log = out / BACKUP_DIR, out / HISTORY_CSV
    metadata = backup / "training_metadata.json"
    if restart or not metadata.exists():
        shutil.rmtree(backup, ignore_errors=True)
        log.unlink(missing_ok=True)
        backup.mkdir()
        write_json(backup / "config.json", config)
        return 0
    saved_file = backup / "config.json"
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    changed = [f"{key} {saved.get(key)!r} -> {config[key]!r}"
               for key in config if saved.get(key) != config[key]]
    if changed:
        raise ScriptError(
            f"{out} holds the backup of a different run ({', '.join(changed)}): "
            "add --restart to discard it, or choose another --output-dir"
        )
    done = json.loads(metadata.read_text())["epoch"]
    keep_first_rows(log, done)
    print(f"Resuming from the backup in {backup}: {done} epoch(s) already done "
          "(add --restart to start over).")
    return done


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch, its validation included."""

    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def train(model, inputs, args, out, batchnorm=True):
    """Fit as the lesson does; returns (History of all epochs, epoch seconds, epochs resumed)."""
    done = prepare_resume(out, backup_config(args, batchnorm), args.restart)
    timer = EpochTimer()
    callbacks = [
        timer,
        # The log comes first: a kill between the two leaves one log row too
        # many, which prepare_resume drops, never one too few.
        keras.callbacks.CSVLogger(str(out / HISTORY_CSV), append=True),
        keras.callbacks.BackupAndRestore(str(out / BACKUP_DIR), double_checkpoint=True),
    ]
    with contextlib.ExitStack() as startup:
        # Filter stderr only until the first step has run: fit's start-up lines
        # go, while anything later reaches the user at once.
        startup.enter_context(filtered_stderr())
        callbacks.append(keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: startup.close()))
        history = model.fit(
            **inputs,
            epochs=args.epochs,
            verbose=args.verbose,
            callbacks=callbacks,
        )
    history.history = read_history_csv(out / HISTORY_CSV)
    return history, timer.seconds, done


# ---------------------------------------------------------------------------
# Evaluation and outputs
# ---------------------------------------------------------------------------
def balanced_accuracy(y_true, y_pred):
    """Mean of the per-class accuracies over the classes present in y_true."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def class_names(dataset):
    """Pairs of (character, romanization) for KMNIST; class numbers for K49."""
    if dataset == "kmnist":
        return CLASS_NAMES
    return [(str(i), str(i)) for i in range(DATASETS[dataset]["classes"])]


def versions():
    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def save_plots(out, history, x_test, y_test, predicted, dataset):
    names = class_names(dataset)
    paths = {
        "training_history": out / "training_history.png",
        "predictions": out / "predictions.png",
        "confusion_matrix": out / "confusion_matrix.png",
    }
    plot_history.plot_history(history, paths["training_history"])
    plot_history.plot_predictions(x_test, y_test, predicted, names, paths["predictions"])
    plot_history.plot_confusion_matrix(y_test, predicted, names, paths["confusion_matrix"])
    return paths


def save_interrupted(out, no_plot):
    """Keep what an interrupted run finished: its history and curves."""
    history = read_history_csv(out / HISTORY_CSV)
    epochs = len(history.get("loss", []))
    written = []
    if epochs:
        write_json(out / "history.json", history)
        written.append(out / "history.json")
        if not no_plot:
            plot_history.plot_history(history, out / "training_history.png")
            written.append(out / "training_history.png")
    where = f"; wrote {', '.join(map(str, written))}" if written else ""
    return Interrupted(
        f"Interrupted after {epochs} completed epoch(s){where}. "
        "Run the same command again to resume from the backup."
    )


def save_model(model, path, fast=False):
    """Save through a temporary file; a --fast model is saved with the lesson's own
    layers (same weights), so the file loads anywhere without this module."""
    if fast:
        plain = compile_model(build_model(input_shape, model.layers[-1].units,
                                          batchnorm=model.name == "batchnorm_cnn"))
        plain.set_weights(model.get_weights())
        plain.optimizer.build(plain.trainable_variables)  # carry Adam's state over too
        for target, source in zip(plain.optimizer.variables, model.optimizer.variables):
            target.assign(source)
        model = plain
    partial = path.with_name("model.partial.keras")
    model.save(partial)
    os.replace(partial, path)


def run_variant(args, data, out, batchnorm=True):
    """Build, train, test and save one model; returns its result dict."""
    (x_train, y_train), (x_test, y_test) = data
    out.mkdir(parents=True, exist_ok=True)
    classes = DATASETS[args.dataset]["classes"]
    with distribution_scope(args):
        model = compile_model(build_model(input_shape, classes, batchnorm, fused=args.fast),
                              fast=args.fast)
    if isinstance(args.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        work_around_keras_multiworker(model, args.strategy)
    try:
        history, epoch_seconds, done = train(model, fit_inputs(args, x_train, y_train), args,
                                             out, batchnorm)
    except KeyboardInterrupt:
        raise save_interrupted(out, args.no_plot) from None

    test = test_inputs(args, x_test, y_test)
    with filtered_stderr():  # each new tf.data pipeline repeats fit's start-up line
        start = time.perf_counter()
        test_loss, test_accuracy = (float(v) for v in model.evaluate(**test, verbose=0))
        evaluation_seconds = time.perf_counter() - start
        predicted = model.predict(test["x"], batch_size=args.batch_size,
                                  verbose=0).argmax(axis=1)
    print(f"Test loss: {test_loss} / Test accuracy: {test_accuracy}")
    balanced = balanced_accuracy(y_test, predicted)
    if args.dataset == "k49":
        print(f"Test balanced accuracy: {balanced}")

    outputs = {"history": out / "history.json", "model": out / "model.keras",
               "run": out / "run.json"}
    write_json(outputs["history"], history.history)
    save_model(model, outputs["model"], args.fast)
    if not args.no_plot:
        outputs.update(save_plots(out, history, x_test, y_test, predicted, args.dataset))
    train_images = training_count(len(x_train), args.validation_split)
    seconds = sum(epoch_seconds)
    result = {
        "dataset": args.dataset,
        "config": {
            "batch_size": args.batch_size, "epochs": args.epochs,
            "validation_split": args.validation_split, "limit": args.limit,
            "batchnorm": batchnorm, "seed": args.seed, "deterministic": args.seed is not None,
            "data_dir": str(args.data_dir) if args.data_dir else None,
            "fast": FAST_PATH if args.fast else None,
            "distribute": args.distribute,
            "replicas": model.distribute_strategy.num_replicas_in_sync,
        },
        "parameters": model.count_params(),
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "test_balanced_accuracy": balanced,
        "epochs_completed": len(history.history["loss"]),
        "resumed_from_epoch": done,
        "train_images": train_images,
        "validation_images": len(x_train) - train_images,
        "test_images": len(x_test),
        "training_seconds": seconds,
        "epoch_seconds": epoch_seconds,
        "training_images_per_second": (train_images * len(epoch_seconds) / seconds
                                       if epoch_seconds else None),
        "evaluation_seconds": evaluation_seconds,
        "versions": versions(),
    }
    write_json(outputs["run"], result)
    result["history"] = history.history
    result["model"] = model
    result["outputs"] = {key: str(path) for key, path in outputs.items()}
    print(f"Wrote {', '.join(path.name for path in outputs.values())} to {out}")
    return result


# ---------------------------------------------------------------------------
# The lesson's question: does BatchNormalization help? (--compare)
# ---------------------------------------------------------------------------
VARIANTS = (("batchnorm", True), ("no_batchnorm", False))
VARIANT_LABELS = {"batchnorm": "with BatchNormalization",
                  "no_batchnorm": "without BatchNormalization"}
THRESHOLDS = (0.90, 0.95, 0.98)
DEFAULT_COMPARE_SEED = 1


def epochs_to_reach(val_accuracy, threshold):
    """The first epoch (counted from 1) whose validation accuracy reaches threshold, or None."""
    for epoch, value in enumerate(val_accuracy, start=1):
        if value >= threshold:
            return epoch
    return None


def comparison_summary(results):
    summary = {}
    for name, result in results.items():
        history, epoch_seconds = result["history"], result["epoch_seconds"]
        summary[name] = {
            "parameters": result["parameters"],
            "test_accuracy": result["test_accuracy"],
            "test_loss": result["test_loss"],
            "epochs_to_val_accuracy": {
                f"{threshold:.0%}": epochs_to_reach(history["val_accuracy"], threshold)
                for threshold in THRESHOLDS
            },
            "seconds_per_epoch": (sum(epoch_seconds) / len(epoch_seconds)
                                  if epoch_seconds else None),
        }
    return summary


def format_comparison(summary):
    """A Markdown table of the comparison, one column per variant."""
    names = list(summary)

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(summary[n]) for n in names) + " |"

    lines = [
        "| | " + " | ".join(VARIANT_LABELS[n] for n in names) + " |",
        "|---|" + "---|" * len(names),
        row("parameters", lambda s: f"{s['parameters']:,}"),
        row("test accuracy", lambda s: f"{s['test_accuracy']:.4f}"),
        row("test loss", lambda s: f"{s['test_loss']:.4f}"),
    ]
    for key in summary[names[0]]["epochs_to_val_accuracy"]:
        lines.append(row(f"epochs to {key} validation accuracy", lambda s, k=key: (
            "not reached" if s["epochs_to_val_accuracy"][k] is None
            else str(s["epochs_to_val_accuracy"][k]))))
    lines.append(row("seconds per epoch", lambda s: (
        "-" if s["seconds_per_epoch"] is None else f"{s['seconds_per_epoch']:.2f}")))
    return "\n".join(lines)


def compare(args, data, out):
    """Train both variants from the same seed on the same data; write the comparison."""
    results = {}
    for name, batchnorm in VARIANTS:
        keras.utils.set_random_seed(args.seed)
        print(f"--- {VARIANT_LABELS[name]} ---")
        results[name] = run_variant(args, data, out / name, batchnorm)
        shutil.copyfile(out / name / "history.json", out / f"history_{name}.json")
    summary = comparison_summary(results)
    write_json(out / "comparison.json", summary)
    print(format_comparison(summary))
    if not args.no_plot:
        plot_history.plot_comparison(
            [results[name]["history"] for name, _ in VARIANTS],
            labels=[VARIANT_LABELS[name] for name, _ in VARIANTS],
            path=out / "batchnorm_comparison.png",
            title=f"{args.dataset.upper()}, {results['batchnorm']['train_images']:,} "
                  "training images: validation curves",
        )
    return {"comparison": summary, "variants": results}


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------
class Interrupted(ScriptError):
    def __init__(self, message):
        super().__init__(message, code=130)


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (exit code 2) instead of usage text."""

    def error(self, message):
        raise ScriptError(f"{message} (see --help)", code=2)


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def open_fraction(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction between 0 and 1 (exclusive), got {text!r}")
    return value


def build_parser():
    parser = OneLineParser(
        description="Train the lesson's BatchNormalization CNN on KMNIST. "
                    "With no flags this is the faithful run.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--epochs", type=positive_int, default=no_epochs, help="training epochs")
    add("--batch-size", type=positive_int, default=batch_size, help="images per step")
    add("--validation-split", type=open_fraction, default=validation_split,
        help="fraction of the training images (the last ones) held out for validation")
    add("--dataset", choices=sorted(DATASETS), default="kmnist",
        help="kmnist (10 classes) or k49 (Kuzushiji-49, 49 classes)")
    add("--limit", type=positive_int, default=None,
        help="use only the first N training and first N test images (smoke runs)")
    add("--data-dir", type=Path, default=None,
        help="read the four official .npz files from this folder instead of downloading")
    add("--redownload", action="store_true",
        help="delete this dataset's files from the Keras cache and download them again")
    add("--output-dir", type=Path, default=Path("outputs"), help="where every output goes")
    add("--restart", action="store_true",
        help="ignore a backup left in --output-dir by an interrupted run and start at epoch 1")
    add("--seed", type=int, default=None,
        help="seed every random generator and make TensorFlow's ops deterministic")
    add("--no-batchnorm", action="store_true",
        help="the same network without its five BatchNormalization layers")
    add("--compare", action="store_true",
        help=f"train with and without BatchNormalization from the same seed "
             f"(default {DEFAULT_COMPARE_SEED}) and compare them")
    add("--fast", action="store_true",
        help="same model and optimisation, executed faster: fused BatchNormalization, "
             "uint8 images in a tf.data pipeline, several steps per call (README, 'Speed')")
    add("--distribute", choices=("mirrored", "multiworker"), default=None,
        help="mirrored: all local GPUs (or --cpu-devices logical CPUs); multiworker: the "
             "cluster in TF_CONFIG, the chief writes the outputs. The global batch stays "
             "--batch-size")
    add("--cpu-devices", type=positive_int, default=2,
        help="with --distribute mirrored and no GPU: split the CPU into this many devices")
    add("--no-plot", action="store_true", help="write no pictures")
    add("--dry-run", action="store_true",
        help="check flags, output folder and data, build the model, then stop before training")
    add("--verbose", type=int, choices=(0, 1, 2), default=None,
        help="Keras fit verbosity; default 1 on a terminal, 2 (a line per epoch) when piped")
    return parser


def parse_args(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose is None:
        args.verbose = verbosity if sys.stdout.isatty() else 2
    if args.compare and args.no_batchnorm:
        parser.error("--compare already trains the variant without BatchNormalization; "
                     "drop --no-batchnorm")
    if args.compare and args.seed is None:
        args.seed = DEFAULT_COMPARE_SEED
    return args


def prepare_output_dir(path):
    """Make sure the output folder can be written before anything slow happens."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ScriptError(
            f"cannot write to the output folder {path} ({err.strerror}): "
            "choose another with --output-dir"
        ) from None
    return path


def seed_everything(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def note_unusual_counts(dataset, x_train, x_test):
    official = DATASETS[dataset]
    if (len(x_train), len(x_test)) != (official["train"], official["test"]):
        print(f"Note: loaded {len(x_train):,} training and {len(x_test):,} test images; "
              f"the official {dataset.upper()} has {official['train']:,} and "
              f"{official['test']:,}.")


def check_split(train_images, split):
    kept = training_count(train_images, split)
    if kept < 1 or kept == train_images:
        raise ScriptError(
            f"{train_images} training image(s) with --validation-split {split} leave "
            f"{kept} for training and {train_images - kept} for validation: "
            "use more images (--limit) or another split"
        )


def main(argv=None):
    """Run the script; returns a result dict, raises ScriptError on bad input."""
    args = parse_args(argv)
    prepare_output_dir(args.output_dir)
    with filtered_stderr():
        tf.config.list_physical_devices()  # the first device query logs CUDA probing
        args.strategy = make_strategy(args.distribute, args.cpu_devices)
    if args.seed is not None:
        seed_everything(args.seed)
    if not is_chief(args.strategy):
        # Other workers train in step with the chief but keep their files apart.
        with tempfile.TemporaryDirectory(prefix="kmnist-worker-") as scratch:
            args.output_dir = Path(scratch)
            return run(args)
    return run(args)


def run(args):
    """Load, check and train as the flags say; returns main()'s result."""
    out = args.output_dir
    (x_train, y_train), (x_test, y_test) = load_data(args.dataset, args.data_dir,
                                                     args.redownload)
    note_unusual_counts(args.dataset, x_train, x_test)
    if args.limit:
        x_train, y_train = x_train[: args.limit], y_train[: args.limit]
        x_test, y_test = x_test[: args.limit], y_test[: args.limit]
    check_split(len(x_train), args.validation_split)
    data = (x_train, y_train), (x_test, y_test)

    if args.dry_run:
        model = build_model(input_shape, DATASETS[args.dataset]["classes"],
                            not args.no_batchnorm, fused=args.fast)
        model.summary()
        print(f"Dry run: flags, output folder and {len(x_train):,}/{len(x_test):,} "
              "images are fine; nothing was trained.")
        return {"dry_run": True, "parameters": model.count_params()}
    if args.compare:
        return compare(args, data, out)
    return run_variant(args, data, out, batchnorm=not args.no_batchnorm)


def cli(argv=None):
    """main() for the command line: one-line errors and exit codes, no tracebacks."""
    try:
        main(argv)
    except Interrupted as err:
        print(err, file=sys.stderr)
        return err.code
    except ScriptError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("Interrupted before training started; nothing was written.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(cli())
