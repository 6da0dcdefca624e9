"""A run's pictures, each asked for as soon as its data exists and drawn beside the run
(painter.py); take() writes it whole (files.write_atomically)."""
import plot_history
from machinery import files, painter

# The order in which take_all() writes them, and run.json and the last line name them.
ORDER = (files.PREDICTIONS_PNG, files.CONFUSION_MATRIX_PNG, files.BATCHNORM_STATISTICS_PNG)


class Pictures:
    """The pictures of a run in OUT (none where `enabled` is false: --no-plot)."""

    def __init__(self, out, enabled=True):
        self.out, self.enabled, self.asked = out, enabled, {}
        # started now, so that its own start-up is over when training ends
        self.painter = painter.Painter() if enabled else None

    def ask(self, name, draw, *args):
        """Start drawing draw(*args, path), a plot_history function, as OUT/name."""
        if not self.enabled:
            return
        request = self.painter.draw(draw, args, files.partial_path(self.out / name))
        self.asked[name] = (draw, args, request)

    def take(self, name):
        """Wait for the picture `name` and write it, drawn here where the process did not."""
        draw, args, request = self.asked.pop(name)
        files.write_atomically(self.out / name, lambda partial: (
            self.painter.drew(request) or draw(*args, partial)))
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
        """No more pictures (painter.Painter.close)."""
        if self.painter is not None:
            self.painter.close()
