"""--tensorboard: Keras' TensorBoard callback (per-epoch scalars, the graph) and every
weight's histogram, the BatchNormalization layers' included, in OUTPUT_DIR/logs; one
run per variant under --compare, so that TensorBoard overlays them."""
from machinery.files import LOGS_DIR
from machinery.quiet import keras, tf


def log_writers(run):
    """The callbacks that write run's logs (none without --tensorboard)."""
    if not run.tensorboard:
        return []
    logs = run.top_dir / LOGS_DIR
    if run.variant:  # a --compare run
        logs = logs / run.variant
    return [keras.callbacks.TensorBoard(str(logs), histogram_freq=0, write_graph=True),
            WeightHistograms(logs / "train")]


class WeightHistograms(keras.callbacks.Callback):
    """Each weight's histogram after every epoch, tagged by its path (model/layer/weight). Some
    Keras 3 releases (the one Python 3.10 gets among them) tag their own by the bare weight name,
    where the five BatchNormalization layers' `moving_mean`s would share one tag."""

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
