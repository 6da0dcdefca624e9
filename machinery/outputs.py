"""The files a run writes, named once, each written whole or not at all; and the
record of the run (run.json)."""
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

import plot_history
from machinery import fast, painter
from machinery.data import training_image_count
from machinery.errors import Interrupted, Terminated, environmental
from machinery.quiet import keras, tf

HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
MODEL = "model.keras"
RUN_JSON = "run.json"
TRAINING_HISTORY_PNG = "training_history.png"
PREDICTIONS_PNG = "predictions.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
BATCHNORM_STATISTICS_PNG = "batchnorm_statistics.png"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
WORKERS_DIR = "workers"  # --distribute multiworker: the other workers' own folders


def partial_name(name):
    stem, dot, suffix = name.partition(".")
    return f"{stem}.partial{dot}{suffix}"


def partial_path(path):
    """Where write_atomically(path, ...) has the file written first."""
    return path.with_name(partial_name(path.name))


def replace(partial, path, attempts=50):
    """os.replace. Windows refuses to replace a file another process holds open (a
    --predict reading model.keras, a viewer, a virus scanner) until it is closed: there,
    try again for up to 5 s before giving up."""
    for attempt in range(attempts):
        try:
            return os.replace(partial, path)
        except PermissionError:
            if sys.platform != "win32" or attempt == attempts - 1:
                raise
            time.sleep(0.1)


def write_atomically(path, write):
    """write(temporary path), then rename it to `path`: a crash never leaves half a file,
    and a failure leaves no temporary one. A full disk or a read-only folder is one line."""
    partial = partial_path(path)
    try:
        write(partial)
        replace(partial, path)
    except BaseException as err:
        partial.unlink(missing_ok=True)
        fault = environmental(err, path)
        if fault:
            raise fault from None
        raise


def write_json(path, data):
    write_atomically(path, lambda partial: partial.write_text(json.dumps(data, indent=2) + "\n"))


def data_sha256(arrays):
    """The identity of the data this run trains and tests on (after --limit)."""
    digest = hashlib.sha256()
    for array in (a for pair in arrays for a in pair):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def run_config(args, batchnorm, arrays):
    """Everything that shaped this run, built once: run.json records it and a backup
    must match part of it (resume.MUST_MATCH)."""
    return {
        "dataset": args.dataset, "data_sha256": data_sha256(arrays),
        "classes": args.classes, "class_names": args.class_names,
        "batch_size": args.batch_size, "epochs": args.epochs,
        "learning_rate": args.learning_rate,
        "validation_split": args.validation_split, "limit": args.limit,
        "batchnorm": batchnorm, "bn_momentum": args.bn_momentum,
        "recompute_bn_stats": args.recompute_bn_stats,
        "track_batch_stats": args.track_batch_stats,
        "layer_inputs_of": args.layer_inputs_of if args.track_layer_inputs else None,
        "seed": args.seed, "deterministic": args.seed is not None,
        "data_dir": str(args.data_dir) if args.data_dir else None,
        "image_preparation": args.image_preparation,
        "fast": fast.settings(args),
        "precision": args.precision,
        "distribute": args.distribute, "sync_bn": args.sync_bn,
        "replicas": args.strategy.num_replicas_in_sync if args.strategy else 1,
    }


def tensorboard(args, out):
    """--tensorboard: Keras' TensorBoard callback (per-epoch scalars, the graph, weight
    histograms, the BatchNormalization layers' included) writing to OUTPUT_DIR/logs, one
    run per variant under --compare so that TensorBoard overlays them."""
    if not args.tensorboard:
        return []
    logs = args.output_dir / LOGS_DIR
    if out != args.output_dir:  # a --compare variant's sub-folder
        logs = logs / out.name
    return [keras.callbacks.TensorBoard(str(logs), histogram_freq=0, write_graph=True),
            WeightHistograms(logs / "train")]


class WeightHistograms(keras.callbacks.Callback):
    """Each weight's histogram after every epoch, tagged by its path (model/layer/weight).
    Keras' own histograms are tagged by the bare weight name in some Keras 3 releases
    (the one Python 3.10 gets among them), where the five BatchNormalization layers'
    `moving_mean`s would share one tag."""

    def __init__(self, folder):
        super().__init__()
        self.folder, self.writer = folder, None

    def on_epoch_end(self, epoch, logs=None):
        if self.writer is None:
            self.writer = tf.summary.create_file_writer(str(self.folder))
        with self.writer.as_default():
            for weight in self.model.weights:
                tf.summary.histogram(f"{weight.path}/histogram", weight, step=epoch)
        self.writer.flush()


def balanced_accuracy(y_true, y_pred):
    """Mean of the per-class accuracies over the classes present in y_true."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def versions():
    return {"python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__}


def save_model(model, path, fused):
    """A --fast model is saved with the lesson's own layers, so the file loads anywhere;
    a --precision bfloat16 model as float32 (fast.with_plain_layers does both)."""
    if fused or model.dtype_policy.name != "float32":
        model = fast.with_plain_layers(model)
    write_atomically(path, model.save)


class Pictures:
    """A run's pictures (none under --no-plot). Each is asked for as soon as its data
    exists and drawn beside the run by a painter.Painter; take() writes it whole, drawn
    here instead wherever the painter could not."""

    def __init__(self, out, enabled=True):
        self.out, self.enabled, self.asked = out, enabled, {}
        self.painter = painter.Painter() if enabled else None

    def ask(self, name, function, *args):
        """plot_history.function(*args, OUT/name), to be drawn."""
        if self.enabled:
            request = self.painter.draw(function, args, partial_path(self.out / name))
            self.asked[name] = (getattr(plot_history, function), args, request)

    def take(self, name):
        draw, args, request = self.asked.pop(name)
        write_atomically(self.out / name, lambda partial: (
            self.painter.drew(request) or draw(*args, partial)))
        return self.out / name

    def close(self):
        if self.painter is not None:
            self.painter.close()


def save_pictures(pictures, x_test, y_test, evaluation, names):
    """predictions.png beside the run, confusion_matrix.png here meanwhile, and
    batchnorm_statistics.png, asked for as training ended (batchnorm_stats.Monitor)."""
    predicted = evaluation["predicted"]
    pictures.ask(PREDICTIONS_PNG, "plot_predictions", x_test, y_test, predicted, names)
    confusion_matrix = pictures.out / CONFUSION_MATRIX_PNG
    write_atomically(confusion_matrix, lambda partial: (
        plot_history.plot_confusion_matrix(y_test, predicted, names, partial)))
    paths = {"predictions": pictures.take(PREDICTIONS_PNG), "confusion_matrix": confusion_matrix}
    if BATCHNORM_STATISTICS_PNG in pictures.asked:
        paths["batchnorm_statistics"] = pictures.take(BATCHNORM_STATISTICS_PNG)
    pictures.close()
    return paths


def interruption(out, history, pictures, terminated=False):
    """Write what an interrupted run finished (its history and curves); return the
    Interrupted (or, after SIGTERM, Terminated) error that tells the user where."""
    epochs = len(history.get("loss", []))
    written = []
    if epochs:
        write_json(out / HISTORY_JSON, history)
        written.append(out / HISTORY_JSON)
        if pictures:
            write_atomically(out / TRAINING_HISTORY_PNG,
                             lambda partial: plot_history.plot_history(history, partial))
            written.append(out / TRAINING_HISTORY_PNG)
    where = f"; wrote {', '.join(map(str, written))}" if written else ""
    error, what = (Terminated, "Terminated (SIGTERM)") if terminated else (Interrupted,
                                                                          "Interrupted")
    again = ("resume from the backup" if epochs else
             "start at epoch 1 (no epoch was completed)")
    return error(f"{what} after {epochs} completed epoch(s){where}. "
                 f"Run the same command again to {again}.")


def run_record(config, model, evaluation, data, session):
    """run.json: the configuration, the results, the timings and the versions."""
    (x_train, _), (x_test, _) = data
    train_images = training_image_count(len(x_train), config["validation_split"])
    seconds = sum(session.epoch_seconds)
    return {
        "dataset": config["dataset"],
        "config": {key: value for key, value in config.items() if key != "dataset"},
        "parameters": model.count_params(),
        **{key: evaluation[key] for key in ("test_loss", "test_accuracy",
                                            "test_balanced_accuracy")},
        "epochs_completed": len(session.history["loss"]),
        "resumed_from_epoch": session.epochs_done,
        "train_images": train_images,
        "validation_images": len(x_train) - train_images,
        "test_images": len(x_test),
        "training_seconds": seconds,
        "epoch_seconds": session.epoch_seconds,
        "epoch_cpu_seconds": session.epoch_cpu_seconds,
        "training_images_per_second": (train_images * len(session.epoch_seconds) / seconds
                                       if session.epoch_seconds else None),
        "evaluation_seconds": evaluation["evaluation_seconds"],
        "batchnorm_diagnosis": evaluation["batchnorm_diagnosis"],
        "batchnorm_statistics": evaluation["batchnorm_statistics"],
        "versions": versions(),
    }


def save_run(out, model, evaluation, data, config, session, pictures):
    """Write history.json, model.keras, the pictures (a Pictures) and run.json; returns
    the run's result."""
    (_, _), (x_test, y_test) = data
    evaluation["test_balanced_accuracy"] = balanced_accuracy(y_test, evaluation["predicted"])
    if config["dataset"] == "k49":  # its authors recommend balanced accuracy
        print(f"Test balanced accuracy: {evaluation['test_balanced_accuracy']}")
    written = {"history": out / HISTORY_JSON, "model": out / MODEL, "run": out / RUN_JSON}
    write_json(written["history"], session.history)
    save_model(model, written["model"], fused=config["fast"] is not None)
    if pictures.enabled:
        written["training_history"] = out / TRAINING_HISTORY_PNG  # drawn by the lesson
        written.update(save_pictures(pictures, x_test, y_test, evaluation,
                                     config["class_names"]))
    result = run_record(config, model, evaluation, data, session)
    write_json(written["run"], result)
    print(f"Wrote {', '.join(path.name for path in written.values())} to {out}")
    return {**result, "history": session.history, "model": model,
            "outputs": {key: str(path) for key, path in written.items()}}
