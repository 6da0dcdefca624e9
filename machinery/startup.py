"""Before anything slow: the output folder is writable and this run's alone (folder.py),
the devices are set up, the seeds are set, and a worker that is not the chief writes
to a scratch folder."""
import contextlib
import tempfile
from pathlib import Path

from machinery import distribute, folder
from machinery.errors import ScriptError
from machinery.quiet import filtered_stderr, keras, tf


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
def prepared(args):
    """Check the output folder, set up devices (args.strategy) and seeds; the chief
    holds the output folder for the run's whole life (a dry run writes nothing there);
    a worker that is not the chief gets a scratch output folder, removed when it is done."""
    check_output_dir(args.output_dir)
    with filtered_stderr():
        tf.config.list_physical_devices()  # the first device query logs CUDA probing
        args.strategy = distribute.make_strategy(args.distribute, args.cpu_devices)
    if args.seed is not None:
        seed_everything(args.seed)
    if distribute.is_chief(args.strategy):
        with (contextlib.nullcontext() if args.dry_run
              else folder.claimed(args.output_dir, args.overwrite, args.learning_rates)):
            yield args
        return
    # Other workers train in step with the chief but keep their files apart.
    with tempfile.TemporaryDirectory(prefix="kmnist-worker-") as scratch:
        args.output_dir = Path(scratch)
        yield args
