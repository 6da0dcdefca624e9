"""A run backed up after every epoch, so that a killed or interrupted run resumes.

Keras' BackupAndRestore keeps the model, the optimizer and the epoch count;
CSVLogger appends each epoch's metrics. Together they give the full history of
a run that was resumed any number of times.
"""
import contextlib
import csv
import json
import shutil
import time

from machinery import outputs
from machinery.errors import ScriptError
from machinery.quiet import keras, until_first_step

# What a backup must share with this run to be resumed by it, in the order an
# error names the differences.
MUST_MATCH = ("dataset", "batchnorm", "batch_size", "validation_split", "limit",
              "bn_momentum", "track_batch_stats")


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
    outputs.write_atomically(path, lambda partial: partial.write_text("".join(lines[: count + 1])))


def start_or_resume(out, config, restart=False):
    """Return how many epochs the backup in `out` already holds. With none (or with
    `restart`), delete any old backup and log and start a new backup: 0."""
    backup, log = out / outputs.BACKUP_DIR, out / outputs.HISTORY_CSV
    metadata = backup / "training_metadata.json"
    wanted = {key: config[key] for key in MUST_MATCH}
    if restart or not metadata.exists():
        shutil.rmtree(backup, ignore_errors=True)
        log.unlink(missing_ok=True)
        backup.mkdir(parents=True)
        outputs.write_json(backup / "config.json", wanted)
        return 0
    saved_file = backup / "config.json"
    saved = json.loads(saved_file.read_text()) if saved_file.exists() else {}
    changed = [f"{key} {saved.get(key)!r} -> {value!r}"
               for key, value in wanted.items() if saved.get(key) != value]
    if changed:
        raise ScriptError(
            f"{out} holds the backup of a different run ({', '.join(changed)}): "
            "add --restart to discard it, or choose another --output-dir"
        )
    epochs_done = json.loads(metadata.read_text())["epoch"]
    keep_first_rows(log, epochs_done)
    print(f"Resuming from the backup in {backup}: {epochs_done} epoch(s) already done "
          "(add --restart to start over).")
    return epochs_done


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch, its validation included."""

    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


class Session:
    """What model.fit needs from this module (callbacks), and what it leaves behind."""

    def __init__(self, out, epochs_done):
        self.epochs_done, self.timer = epochs_done, EpochTimer()
        self.epoch_seconds = self.timer.seconds
        self.callbacks = [
            self.timer,
            # The log comes first: a kill between the two leaves one log row too
            # many, which start_or_resume drops, never one too few.
            keras.callbacks.CSVLogger(str(out / outputs.HISTORY_CSV), append=True),
            keras.callbacks.BackupAndRestore(str(out / outputs.BACKUP_DIR),
                                             double_checkpoint=True),
        ]
        self.history = {}


@contextlib.contextmanager
def resumable(out, config, restart=False, pictures=True):
    """Around model.fit: start or resume the backup, yield the Session whose callbacks fit
    takes, keep TensorFlow's start-up lines quiet, and turn Ctrl-C into Interrupted after
    writing what was finished. Afterwards session.history holds every epoch of the run."""
    session = Session(out, start_or_resume(out, config, restart))
    try:
        with until_first_step(session.callbacks):
            yield session
    except KeyboardInterrupt:
        raise outputs.interruption(out, read_history_csv(out / outputs.HISTORY_CSV),
                                   pictures) from None
    session.history = read_history_csv(out / outputs.HISTORY_CSV)
