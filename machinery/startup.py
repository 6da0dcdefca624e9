"""Before anything slow: the output folder writable and this run's alone (folder.py), the devices
set up, a precision they compute natively, the seeds set, Keras' array pipelines without tf.data's
autotuning, a non-chief worker's own folder, and a model's training state built before fit."""
import collections
import contextlib
import shutil
import tempfile

import numpy as np

from machinery import (comparisons, distribute, fast, files, folder, keras_internals,
                       settings, signals)
from machinery.errors import ScriptError
from machinery.quiet import filtered_stderr, keras, tf

# What the machine gives a run, for its settings: where it writes (a worker that is
# not the chief: its own folder), the tf.distribute strategy (or None), the precision.
Place = collections.namedtuple("Place", "output_dir strategy precision")


def check_output_dir(path):
    """Make sure the output folder can be written before anything slow happens."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as err:
        raise ScriptError(
            f"cannot write to the output folder {path} ({err.strerror}): "
            "choose another with --output-dir"
        ) from None
    return path


def seed_everything(seed):
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def own_folder(args, strategy):
    """Yields the folder this process writes to. The chief claims the output folder for the run's
    whole life (not on a dry run), with every name the run may create; another worker keeps its
    files, backup included, in OUTPUT_DIR/workers/TASK-N, kept if the run fails, else removed."""
    if distribute.is_chief(strategy):
        names = files.run_files(*comparisons.outputs(args.compare, args.learning_rate,
                                                     args.batch_size))
        with (contextlib.nullcontext() if args.dry_run
              else folder.claimed(args.output_dir, args.overwrite, names)):
            yield args.output_dir
        return
    workers = args.output_dir / files.WORKERS_DIR
    own = workers / distribute.task_name(strategy).replace(" ", "-")
    if args.overwrite and not args.dry_run:  # as the chief replaces its run
        shutil.rmtree(own, ignore_errors=True)
    check_output_dir(own)
    yield own
    shutil.rmtree(own)
    with contextlib.suppress(OSError):  # the last worker to finish removes the folder
        workers.rmdir()


@contextlib.contextmanager
def prepared(args):
    """Check the output folder, set up devices and seeds, give this process its own folder
    (own_folder); yields the Place. A worker lost under --distribute multiworker is one line
    (distribute.lost_worker). A folder made here and left empty (refused or dry run) is removed."""
    signals.new_run()  # main() called again in one process (a notebook, a script)
    made = [path for path in (args.output_dir, *args.output_dir.parents) if not path.exists()]
    check_output_dir(args.output_dir)
    try:
        with set_up(args) as place:
            yield place
    finally:
        for path in made:  # the deepest first; rmdir leaves a folder that holds anything
            with contextlib.suppress(OSError):
                path.rmdir()


@contextlib.contextmanager
def set_up(args):
    with filtered_stderr():
        tf.config.list_physical_devices()  # the first device query logs CUDA probing
        strategy = distribute.make_strategy(args.distribute, args.cpu_devices, args.slurm_port)
    distribute.note_small_shares(min(args.batch_size), args.sync_bn, strategy)
    precision = fast.effective_precision(args.precision)
    if settings.seed_of(args) is not None:
        seed_everything(settings.seed_of(args))
    # The same batches without the stall between epochs (docs/speed.md).
    keras_internals.array_pipelines_without_autotuning()
    try:
        with own_folder(args, strategy) as output_dir:
            yield Place(output_dir, strategy, precision)
    except tf.errors.OpError as err:
        lost = distribute.lost_worker(err, strategy)
        if lost is None:
            raise
        raise lost from None


def built_for_fit(model, strategy):
    """Make the optimizer's and the metrics' variables now, as zeros, as fit would. Without a
    tf.distribute strategy Keras makes them while tracing the first training step, and TensorFlow
    traces a function that made variables again: a second or more of a smoke run (bench/smoke.py).
    Same variables, same values: no number changes. Under a strategy Keras builds them itself."""
    if strategy is not None:
        return model
    model.optimizer.build(model.trainable_variables)
    probe = np.zeros((1, *model.input_shape[1:]), "float32")
    # The probe's counts stay only until fit, which resets the metrics at each epoch.
    model.compute_metrics(probe, np.zeros(1, "int32"), model(probe, training=False), None)
    return model
