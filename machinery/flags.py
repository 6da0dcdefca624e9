"""The training script's flags: each one's type, default and help, in the order --help
lists them; their defaults are the lesson's constants, handed in by model_batchnorm.py.
cli.py checks them together and runs the script. Imports no TensorFlow."""
import argparse
import sys
from pathlib import Path

from machinery.comparisons import DEFAULT, KINDS
from machinery.datasets import DATASETS, OWN
from machinery.errors import UsageError

COMPARE_SEED = 1  # --compare without --seed
# The lesson's layers as the faithful run's model summary names them, in order
# (tests/test_layer_inputs.py holds them against the model that Keras builds).
LESSON_LAYERS = ("conv2d", "batch_normalization", "max_pooling2d", "batch_normalization_1",
                 "conv2d_1", "batch_normalization_2", "max_pooling2d_1",
                 "batch_normalization_3", "flatten", "dense", "batch_normalization_4",
                 "dense_1")
# The output layer's inputs: the closest this network has to Ioffe & Szegedy's Figure 1.
DEFAULT_LAYER = "dense_1"


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (exit code 2) instead of usage text."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def number(text, kind, unreadable):
    """text read as `kind` (int or float); `unreadable`, which the caller refuses, if it
    is not one."""
    try:
        return kind(text)
    except ValueError:
        return unreadable


def positive_int(text):
    value = number(text, int, unreadable=0)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number above 0, got {text!r}")
    return value


def fraction_strictly_between_0_and_1(text):
    value = number(text, float, unreadable=-1.0)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a fraction between 0 and 1 (exclusive), got {text!r}")
    return value


def momentum(text):
    value = number(text, float, unreadable=-1.0)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(
            f"expected a momentum from 0 (inclusive) to 1 (exclusive), got {text!r}")
    return value


def positive_rate(text):
    value = number(text, float, unreadable=0.0)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a learning rate above 0, got {text!r}")
    return value


def add_study_flags(add, defaults):
    """The lesson's two claims measured: covariate shift and higher learning rates."""
    add("--learning-rate", type=positive_rate, nargs="+", default=[defaults["learning_rate"]],
        metavar="RATE",
        help=f"Adam's learning rate; with --compare, several: each is trained with and "
             f"without BatchNormalization (default: {defaults['learning_rate']}, Keras' and "
             f"the lesson's)")
    add("--track-layer-inputs", action="store_true",
        help="record the 15th, 50th and 85th percentiles of a layer's inputs on a probe "
             "batch up to about 100 times during training (fewer where that would take over "
             "3%% of its time), in layer_inputs.json and layer_inputs.png (always on with "
             "--compare)")
    add("--layer-inputs-of", choices=LESSON_LAYERS, default=None, metavar="LAYER",
        help=f"the layer whose inputs --track-layer-inputs records, by its name in the "
             f"model summary (implies --track-layer-inputs): {', '.join(LESSON_LAYERS)} "
             f"(default: {DEFAULT_LAYER}, the output layer)")


def add_batchnorm_flags(add):
    add("--bn-momentum", type=momentum, default=0.99,
        help="momentum of every BatchNormalization layer's moving statistics; lower "
             "forgets the starting values faster (default: %(default)s, Keras' and the "
             "lesson's)")
    add("--recompute-bn-stats", action="store_true",
        help="after training, recompute every BatchNormalization layer's moving mean and "
             "variance from the training images under the final weights ('precise BN')")
    add("--track-batch-stats", action="store_true",
        help="also record each epoch's validation accuracy and loss with batch statistics "
             "in history.json (always on with --compare)")


def add_data_flags(add, defaults):
    add("--epochs", type=positive_int, default=defaults["epochs"],
        help="training epochs (default: %(default)s)")
    add("--batch-size", type=positive_int, nargs="+", default=[defaults["batch_size"]],
        metavar="N", help=f"images per step; with --compare batch-size, several "
                          f"(default: {defaults['batch_size']})")
    add("--validation-split", type=fraction_strictly_between_0_and_1,
        default=defaults["validation_split"],
        help="fraction of the training images (the last ones) held out for validation "
             "(default: %(default)s)")
    add("--dataset", choices=[*DATASETS, OWN], default="kmnist",
        help="kmnist (10 classes), k49 (Kuzushiji-49, 49 classes), mnist or fashion_mnist "
             "(through keras.datasets), or own (your own data.npz in --data-dir) (default: %(default)s)")
    add("--limit", type=positive_int, default=None,
        help="use only the first N training and first N test images (smoke runs) "
             "(default: all images)")
    add("--data-dir", type=Path, default=None,
        help="read the data set's files from this folder instead of downloading "
             "(kmnist/k49: the four official .npz files; own: data.npz) (default: none, "
             "the Keras cache)")
    add("--redownload", action="store_true",
        help="delete this dataset's files from the Keras cache and download them again")


def add_run_flags(add, defaults):
    add("--output-dir", type=Path, default=Path("outputs"),
        help="where every output goes (default: %(default)s)")
    add("--restart", action="store_true",
        help="delete the backup and history.csv an interrupted run left in --output-dir, "
             "and start at epoch 1")
    add("--overwrite", action="store_true",
        help="replace the run this script finished (or left) in --output-dir; files it "
             "did not write are never touched")
    add("--seed", type=int, default=None,
        help="seed every random generator and make TensorFlow's ops deterministic "
             "(default: none, not seeded)")
    add("--no-batchnorm", action="store_true",
        help="the same network without its five BatchNormalization layers")
    add("--compare", nargs="?", const=DEFAULT, default=None, choices=list(KINDS),
        metavar="QUESTION",
        help=f"train the network in each variant of one question, each from the same seed "
             f"({COMPARE_SEED} unless --seed), and compare them in a table and a picture: "
             + "; ".join(f"{name}: {kind.question}" for name, kind in KINDS.items())
             + f" ({DEFAULT} when none is named; docs/compare.md)")
    add("--fast", action="store_true",
        help="same model and optimisation, executed faster: fused BatchNormalization, "
             "uint8 images in a tf.data pipeline, several steps per call (docs/speed.md)")
    add("--precision", choices=("float32", "bfloat16"), default="float32",
        help="bfloat16: Keras' mixed_bfloat16 policy (float32 weights, bfloat16 arithmetic, "
             "BatchNormalization in float32) where the CPU (avx512_bf16, amx_bf16) or a GPU "
             "has it natively, else float32 with a note; model.keras is saved in float32 "
             "(default: %(default)s)")
    add_distribute_flags(add)  # here, so that --help lists them in this place
    add("--no-plot", action="store_true", help="write no pictures")
    add("--tensorboard", action="store_true",
        help="write TensorBoard logs to OUTPUT_DIR/logs (needs the tensorboard package)")
    add("--dry-run", action="store_true",
        help="check flags, output folder and data, build the model, then stop before training")
    add("--verbose", type=int, choices=(0, 1, 2),
        default=defaults["verbosity"] if sys.stdout.isatty() else 2,
        help="Keras fit verbosity, 2 a line per epoch "
             "(default: 1 on a terminal, 2 when piped)")


def add_distribute_flags(add):
    """Several devices or machines (docs/distributed.md)."""
    add("--distribute", choices=("mirrored", "multiworker"), default=None,
        help="mirrored: all local GPUs (or --cpu-devices logical CPUs); multiworker: the "
             "cluster in TF_CONFIG, the chief writes the outputs. The global batch stays "
             "--batch-size (default: none, no tf.distribute)")
    add("--sync-bn", action="store_true",
        help="with --distribute: every BatchNormalization layer normalises with the "
             "statistics of the whole global batch, shared across replicas and workers")
    add("--slurm-port", type=positive_int, default=8888,
        help="--distribute multiworker under Slurm without TF_CONFIG: the port of a "
             "node's first worker (its k-th listens on this + k) (default: %(default)s)")
    add("--cpu-devices", type=positive_int, default=2,
        help="with --distribute mirrored and no GPU: split the CPU into this many devices "
             "(default: %(default)s)")


def add_predict_flag(add):
    add("--predict", nargs="+", metavar=("MODEL", "IMAGE"), default=None,
        help="classify images with a trained model instead of training: MODEL is a run's "
             "output folder or its .keras file; one line per image (docs/predict.md) "
             "(default: none, train)")


def build_parser(defaults):
    """The training script's flags; `defaults` holds the lesson's epochs, batch_size,
    validation_split, learning_rate and verbosity."""
    parser = OneLineParser(
        description="Train the lesson's BatchNormalization CNN on KMNIST. "
                    "With no flags this is the faithful run.",
    )
    add_data_flags(parser.add_argument, defaults)
    add_run_flags(parser.add_argument, defaults)
    add_batchnorm_flags(parser.add_argument)
    add_study_flags(parser.add_argument, defaults)
    add_predict_flag(parser.add_argument)
    return parser
