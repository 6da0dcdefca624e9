"""The files a run writes, each named once here, and the two ways they are written: whole or not
at all (write_atomically), and as JSON. The machinery's ground floor: it imports only errors.py."""
import json
import os
import sys
import time

from machinery.errors import environmental

# In a run's output folder (docs/flags-and-outputs.md; tests/test_docs_tables.py holds
# that table to a real run).
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
MODEL = "model.keras"
RUN_JSON = "run.json"
TRAINING_HISTORY_PNG = "training_history.png"
PREDICTIONS_PNG = "predictions.png"
CONFUSION_MATRIX_PNG = "confusion_matrix.png"
BATCHNORM_STATISTICS_PNG = "batchnorm_statistics.png"
LAYER_INPUTS_JSON = "layer_inputs.json"
LAYER_INPUTS_PNG = "layer_inputs.png"
SIGMOID_INPUTS_JSON = "sigmoid_inputs.json"  # --compare gamma-beta, in each run's folder
COMPARISON_JSON = "comparison.json"
MANIFEST = "manifest.json"
LOCK = "run.lock"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
WORKERS_DIR = "workers"  # --distribute multiworker: the other workers' own folders
# In the backup folder.
BACKUP_CONFIG = "config.json"
BACKUP_METADATA = "training_metadata.json"


def history_of(run):
    """--compare: a copy of one run's history.json beside the runs' folders."""
    return f"history_{run}.json"


def comparison_picture(kind):
    """--compare KIND's picture, beside the runs' folders."""
    return f"{kind.replace('-', '_')}_comparison.png"


COMPARISON_PNG = comparison_picture("batchnorm")  # the lesson's question's


def run_files(sub_folders=(), beside=(COMPARISON_PNG, LAYER_INPUTS_PNG)):
    """Every name a run may create in its output folder: its own files, their partial
    files, its folders, and for --compare the runs' sub-folders (`sub_folders`), their
    histories and the comparison's files beside them (`beside`: its pictures)."""
    files = [HISTORY_JSON, HISTORY_CSV, MODEL, RUN_JSON, TRAINING_HISTORY_PNG,
             PREDICTIONS_PNG, CONFUSION_MATRIX_PNG, BATCHNORM_STATISTICS_PNG,
             LAYER_INPUTS_JSON, *map(history_of, sub_folders), COMPARISON_JSON, *beside]
    folders = [BACKUP_DIR, LOGS_DIR, WORKERS_DIR, *sub_folders]
    return [*files, *map(partial_name, files), *folders]


def partial_name(name):
    stem, dot, suffix = name.partition(".")
    return f"{stem}.partial{dot}{suffix}"


def partial_path(path):
    """Where write_atomically(path, ...) has the file written first."""
    return path.with_name(partial_name(path.name))


def replace(partial, path, attempts=50):
    """os.replace, retried for up to 5 s on Windows, which refuses to replace a file another
    process holds open (a --predict reading model.keras, a viewer, a virus scanner)."""
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
