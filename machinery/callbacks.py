"""The callbacks a run trains with, gathered here in their one order (for_run). A new
feature's callback is one more entry in that list, with the reason for its place."""
import time

from machinery import backup, files, layer_inputs, learning_rates, tensorboard
from machinery.quiet import keras


class EpochTimer(keras.callbacks.Callback):
    """Each epoch's wall-clock seconds (validation included) and the process's CPU seconds (all
    threads): CPU far below wall time means waiting (docs/speed.md, the stall between epochs)."""

    def __init__(self):
        super().__init__()
        self.seconds, self.cpu_seconds = [], []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start[0])
        self.cpu_seconds.append(time.process_time() - self.start[1])


def for_run(run, x_train, session):
    """fit's callbacks for `run` (its Settings), in the order Keras calls each hook. `session`
    (session.Session) holds those whose state outlives fit. None has a per-step end hook: one would
    make Keras hand every step's logs to Python, which slows every step (machinery/quiet.py)."""
    out = run.output_dir
    return [
        # First: its accuracy with batch statistics joins the epoch's logs before they are logged.
        session.monitor,
        *tensorboard.log_writers(run),  # after the monitor: its logs hold what it added
        # A network of --compare's may measure itself (networks.py): before the log and the
        # backup, so that a resumed run finds each epoch it holds measured.
        *(run.network.measures(run, x_train) if run.network and run.network.measures else []),
        session.timer,
        # From here to `release`, a Ctrl-C or SIGTERM waits: the epoch's log row and its
        # backup are written together or not at all.
        keras.callbacks.LambdaCallback(on_epoch_end=session.signals.hold),
        # The log before the backup: a kill between the two leaves one row too many,
        # which resume.py drops, never one too few.
        keras.callbacks.CSVLogger(str(out / files.HISTORY_CSV), append=True),
        backup.Backup(out / files.BACKUP_DIR, session.epochs_done),
        keras.callbacks.LambdaCallback(on_epoch_end=session.signals.release),
        *([layer_inputs.tracker(run, x_train)] if run.layer_inputs_of else []),
        # After the backup: a diverged epoch is logged and backed up, then training stops.
        learning_rates.StopOnDivergence(run.learning_rate),
        # Last: TensorFlow's start-up lines are filtered until the first epoch has ended.
        session.quieted,
    ]
