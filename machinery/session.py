"""The session around one run's fit: where it resumes (resume.py), the callbacks' state that
outlives fit, the pictures, Ctrl-C and SIGTERM; an interrupted run writes what it finished and
stops with one line (signals.stopped). Then it holds every epoch's history, pre-resume included."""
import contextlib

import plot_history
from machinery import batchnorm_stats, callbacks, files, pictures, resume, signals
from machinery.errors import interruption_behind
from machinery.quiet import until_first_epoch_ends


class Session:
    """What fit's callbacks keep (callbacks.for_run), and what fit leaves behind."""

    def __init__(self, run, arrays, epochs_done):
        (x_train, y_train), _ = arrays
        self.epochs_done, self.timer = epochs_done, callbacks.EpochTimer()
        self.signals = signals.SignalsWaitForTheBackup()
        self.pictures = pictures.Pictures(run.output_dir, enabled=run.pictures)
        # it asks for its picture as training ends, drawn while the run evaluates
        self.monitor = batchnorm_stats.monitor(x_train, y_train, run, self.pictures)
        self.quieted, self.history = None, {}


def interrupted(run, stop):
    """Write what an interrupted run finished (its history and curves); return the error
    that tells the user where."""
    out = run.output_dir
    history = resume.backed_up_history(out)
    epochs, written = len(history.get("loss", [])), []
    if epochs:
        files.write_json(out / files.HISTORY_JSON, history)
        written.append(out / files.HISTORY_JSON)
        if run.pictures:
            files.write_atomically(out / files.TRAINING_HISTORY_PNG,
                                   lambda partial: plot_history.plot_history(history, partial))
            written.append(out / files.TRAINING_HISTORY_PNG)
    return signals.stopped(stop, epochs, written)


@contextlib.contextmanager
def resumable(run, arrays):
    """Around model.fit: start or resume the backup, yield the Session, keep TensorFlow's start-up
    lines quiet, and turn Ctrl-C (or SIGTERM) into Interrupted (Terminated) after writing what was
    finished. The backup stays: it goes only when every output is written (folder.claimed)."""
    epochs_done = resume.start_or_resume(run)
    signals.raise_if_swallowed()  # one that landed in the workers' agreement, say
    session = Session(run, arrays, epochs_done)
    try:
        with session.signals.installed(), until_first_epoch_ends() as session.quieted:
            yield session
    except BaseException as err:  # Ctrl-C, or SIGTERM (errors.TerminationSignal)
        stop = interruption_behind(err)
        if stop is None:
            raise
        raise interrupted(run, stop) from None
    session.history = resume.read_history_csv(run.output_dir / files.HISTORY_CSV)
