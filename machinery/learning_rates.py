"""--learning-rate: Adam's step size, several at once under --compare (Ioffe & Szegedy 2015,
Section 3.3: BatchNormalization lets a network train with higher rates), a diverging run stopped
with one line, and the two clocks of convergence (epochs and seconds to a validation accuracy)."""
import math

from machinery.comparisons import rate_text
from machinery.quiet import keras


def diverged_at(loss):
    """The first epoch (counted from 1) whose training loss is NaN or infinite, or None."""
    return next((epoch for epoch, value in enumerate(loss, start=1)
                 if not math.isfinite(value)), None)


def seconds_to_reach(epoch, epoch_seconds, resumed_from=0):
    """Wall-clock seconds of the epochs up to `epoch` (validation included); None when
    the epoch was not reached or some of those epochs ran before a resume (not timed)."""
    if epoch is None or resumed_from > 0 or len(epoch_seconds) < epoch:
        return None
    return sum(epoch_seconds[:epoch])


class StopOnDivergence(keras.callbacks.Callback):
    """Stops training, with one line, at the end of the epoch whose loss turned NaN or infinite
    (keras.callbacks.TerminateOnNaN stops within the epoch, but its per-step hook makes Keras hand
    every step's logs to Python, which slows the lesson's run: machinery/quiet.py). The epoch is
    validated and logged, so the history shows where it diverged."""

    def __init__(self, learning_rate):
        super().__init__()
        self.learning_rate = learning_rate

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.model.stop_training = True
            print(f"Diverged: the training loss became {float(loss)} in epoch {epoch + 1} "
                  f"at learning rate {rate_text(self.learning_rate)}; this run stops "
                  "here, the others go on.")
