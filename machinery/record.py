"""The record of a finished run, written from its Settings: history.json, model.keras, the
test-set pictures and run.json (the settings, the results, the timings and the versions)."""
import platform

import numpy as np

from machinery import fast, files
from machinery.quiet import keras, tf

# The settings run.json records under "config" as they are, in this order; then what
# run_config derives (the run's whole configuration: docs/flags-and-outputs.md).
RECORDED = ("data_sha256", "classes", "class_names", "batch_size", "epochs", "learning_rate",
            "validation_split", "limit", "batchnorm", "bn_momentum", "recompute_bn_stats",
            "track_batch_stats", "layer_inputs_of", "seed")


def run_config(run):
    """Everything that shaped this run, as run.json's "config" records it."""
    return {
        **{key: getattr(run, key) for key in RECORDED},
        "class_names": list(run.class_names),  # in its place, a list as JSON reads it back
        "deterministic": run.seed is not None,
        "data_dir": str(run.data_dir) if run.data_dir else None,
        "image_preparation": run.image_preparation,
        "fast": fast.recorded(run),
        "precision": run.precision,
        "distribute": run.distribute, "sync_bn": run.sync_bn, "replicas": run.replicas,
        "network": run.network_name,
    }


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
    files.write_atomically(path, model.save)


def run_record(run, model, evaluation, data, session):
    """run.json: the configuration, the results, the timings and the versions."""
    (x_train, _), (x_test, _) = data
    seconds, epoch_seconds = sum(session.timer.seconds), session.timer.seconds
    return {
        "dataset": run.dataset,
        "config": run_config(run),
        "parameters": model.count_params(),
        **{key: evaluation[key] for key in ("test_loss", "test_accuracy",
                                            "test_balanced_accuracy")},
        "epochs_completed": len(session.history["loss"]),
        "resumed_from_epoch": session.epochs_done,
        "train_images": run.split_at,
        "validation_images": len(x_train) - run.split_at,
        "test_images": len(x_test),
        "training_seconds": seconds,
        "epoch_seconds": epoch_seconds,
        "epoch_cpu_seconds": session.timer.cpu_seconds,
        "training_images_per_second": (run.split_at * len(epoch_seconds) / seconds
                                       if epoch_seconds else None),
        "evaluation_seconds": evaluation["evaluation_seconds"],
        "batchnorm_diagnosis": evaluation["batchnorm_diagnosis"],
        "batchnorm_statistics": session.monitor.statistics,
        "versions": versions(),
    }


def save_run(run, model, evaluation, data, session):
    """Write history.json, model.keras, the pictures (session.pictures) and run.json;
    returns the run's result."""
    (_, _), (x_test, y_test) = data
    out = run.output_dir
    evaluation["test_balanced_accuracy"] = balanced_accuracy(y_test, evaluation["predicted"])
    if run.dataset == "k49":  # its authors recommend balanced accuracy
        print(f"Test balanced accuracy: {evaluation['test_balanced_accuracy']}")
    written = {"history": out / files.HISTORY_JSON, "model": out / files.MODEL,
               "run": out / files.RUN_JSON}
    # drawn while the model is saved
    session.pictures.ask_for_the_test_set(x_test, y_test, evaluation["predicted"],
                                          run.class_names)
    files.write_json(written["history"], session.history)
    save_model(model, written["model"], fused=run.fast)
    if run.pictures:
        written["training_history"] = out / files.TRAINING_HISTORY_PNG  # drawn by the lesson
        written.update(session.pictures.take_all())
    result = run_record(run, model, evaluation, data, session)
    files.write_json(written["run"], result)
    print(f"Wrote {', '.join(path.name for path in written.values())} to {out}")
    return {**result, "history": session.history, "model": model,
            "outputs": {key: str(path) for key, path in written.items()}}
