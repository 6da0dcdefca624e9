"""A run's pictures, each drawn as soon as its data exists by a worker thread, beside the
run's own work, and written whole when the run takes it.

matplotlib draws in Python, one thread at a time, but TensorFlow lets go of Python while
it computes: a picture asked for as training ends is drawn while the run evaluates, and
the test set's while it saves the model (bench/records/2026-12-07-pictures.md measures
this against a second process). The thread draws into memory, so a Ctrl-C leaves no
partial file; the run writes the picture, with files.write_atomically, in take().
"""
import concurrent.futures
import io

import plot_history
from machinery import files

WAIT_S = 0.1  # the run waits in steps, so that Ctrl-C is not held up (on Windows too)
# The order in which take_all() writes them, and run.json and the last line name them.
ORDER = (files.PREDICTIONS_PNG, files.CONFUSION_MATRIX_PNG, files.BATCHNORM_STATISTICS_PNG)


def drawn(draw, args):
    """The PNG bytes of draw(*args, file), one of plot_history's pictures."""
    buffer = io.BytesIO()
    draw(*args, buffer)
    return buffer.getvalue()


class Pictures:
    """The pictures of a run in OUT (none where `enabled` is false: --no-plot)."""

    def __init__(self, out, enabled=True):
        self.out, self.enabled, self.asked, self.worker = out, enabled, {}, None

    def ask(self, name, draw, *args):
        """Start drawing draw(*args, file), one of plot_history's functions, as OUT/name."""
        if not self.enabled:
            return
        if self.worker is None:
            self.worker = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="pictures")
        self.asked[name] = self.worker.submit(drawn, draw, args)

    def take(self, name):
        """Wait for the picture `name` (Ctrl-C is not held up) and write it: OUT/name."""
        drawing = self.asked.pop(name)
        try:
            while not drawing.done():
                concurrent.futures.wait([drawing], timeout=WAIT_S)
        except BaseException:  # Ctrl-C: no picture is left to draw, none to write
            self.close()
            raise
        data = drawing.result()  # a picture that failed fails here, with its traceback
        files.write_atomically(self.out / name, lambda partial: partial.write_bytes(data))
        return self.out / name

    def ask_for_the_test_set(self, x_test, y_test, predicted, names):
        self.ask(files.PREDICTIONS_PNG, plot_history.plot_predictions,
                 x_test, y_test, predicted, names)
        self.ask(files.CONFUSION_MATRIX_PNG, plot_history.plot_confusion_matrix,
                 y_test, predicted, names)

    def take_all(self):
        """Every picture asked for, written: {name without .png: path}, in ORDER."""
        taken = {name.removesuffix(".png"): self.take(name)
                 for name in sorted(self.asked, key=ORDER.index)}
        self.close()
        return taken

    def close(self):
        if self.worker is not None:
            self.worker.shutdown(wait=False, cancel_futures=True)
