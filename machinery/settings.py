"""A run's settings, made once after the flags are checked and the data is loaded, then
frozen: every module reads their attributes; run.json and the backup's key come from
them. A --compare run is a copy with its differences, and its `variant` says so."""
import dataclasses
import hashlib
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from machinery import fast, own_data
from machinery.comparisons import DEFAULT
from machinery.datasets import DATASETS, OWN, class_names
from machinery.errors import ScriptError
from machinery.flags import COMPARE_SEED, DEFAULT_LAYER


@dataclasses.dataclass(frozen=True)
class Settings:
    # The data, after --limit.
    dataset: str
    data_dir: Optional[Path]
    limit: Optional[int]
    data_sha256: str  # the identity of the arrays the run trains and tests on
    classes: int
    class_names: tuple  # (name, plain-text fallback) per class
    image_preparation: Optional[dict]  # own data's record of its images' preparation
    preprocess: Callable  # the lesson's scaling of uint8 images: the only one
    split_at: int  # the first split_at training images train, the rest validate
    # The training.
    epochs: int
    batch_size: int
    batch_sizes: tuple  # --compare batch-size trains at each
    validation_split: float
    learning_rate: float
    learning_rates: tuple  # --compare trains a pair at each
    batchnorm: bool
    network: object  # a networks.Network of --compare, or None: the lesson's
    bn_momentum: float
    seed: Optional[int]
    fast: bool
    steps_per_execution: int
    precision: str  # what the run computes in (--precision where the hardware has it)
    distribute: Optional[str]
    sync_bn: bool
    strategy: object  # the tf.distribute strategy, or None
    replicas: int
    # What is tracked and written, and where.
    recompute_bn_stats: bool
    track_batch_stats: bool
    layer_inputs_of: Optional[str]  # the layer whose inputs are tracked, or None
    tensorboard: bool
    pictures: bool
    verbose: int
    restart: bool
    compare: Optional[str]  # the question --compare answers (comparisons.KINDS), or None
    top_dir: Path  # --output-dir (a worker's own folder under --distribute multiworker)
    variant: Optional[str] = None  # a --compare run: its sub-folder of top_dir

    @property
    def output_dir(self):
        return self.top_dir / self.variant if self.variant else self.top_dir

    @property
    def network_name(self):
        return self.network.name if self.network else None


def seed_of(args):
    """--seed; for --compare without it, COMPARE_SEED: both variants start alike."""
    return COMPARE_SEED if args.seed is None and args.compare else args.seed


def split_point(images, split):
    """How many of `images` fit() trains on: Keras holds out the last `split` of them,
    rounding the training share down."""
    return int(images * (1 - split))


def data_sha256(arrays):
    """The identity of the data this run trains and tests on (after --limit)."""
    digest = hashlib.sha256()
    for array in (a for pair in arrays for a in pair):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(np.ascontiguousarray(array).data)
    return digest.hexdigest()


def describe_classes(args, data):
    """(classes, names, image preparation or None): the data set's, or own data's."""
    (_, y_train), (_, y_test) = data
    if args.dataset != OWN:
        classes = DATASETS[args.dataset]["classes"]
        return classes, class_names(args.dataset, classes), None
    classes = own_data.class_count(y_train, y_test, args.data_dir)
    own_names = own_data.class_names(args.data_dir, classes)
    print(f"Own data: {classes} classes (labels 0 to {classes - 1}"
          f"{', named in ' + own_data.OWN_CLASS_NAMES_FILE if own_names else ''}), "
          f"{len(y_train):,} training and {len(y_test):,} test images.")
    preparation = own_data.preparation(args.data_dir, data[0][0])
    return classes, class_names(args.dataset, classes, own_names), preparation


def first_images(data, args):
    """(the first --limit images, the split point): a subset of an official data set is
    noted, and a split that leaves no training or no validation image refused."""
    (x_train, y_train), (x_test, y_test) = data
    official, split = DATASETS.get(args.dataset), args.validation_split
    if official and (len(x_train), len(x_test)) != (official["train"], official["test"]):
        print(f"Note: loaded {len(x_train):,} training and {len(x_test):,} test images; "
              f"the official {args.dataset.upper()} has {official['train']:,} and "
              f"{official['test']:,}.")
    if args.limit:
        x_train, y_train, x_test, y_test = (a[:args.limit] for a in (x_train, y_train,
                                                                      x_test, y_test))
    kept = split_point(len(x_train), split)
    if kept < 1 or kept == len(x_train):
        raise ScriptError(
            f"{len(x_train)} training image(s) with --validation-split {split} leave "
            f"{kept} for training and {len(x_train) - kept} for validation: "
            "use more images (--limit) or another split"
        )
    return ((x_train, y_train), (x_test, y_test)), kept


def for_run(args, place, data, preprocess):
    """(the run's Settings, its arrays) from the checked flags, startup's Place, the
    loaded data and the lesson's preprocess."""
    classes, names, preparation = describe_classes(args, data)
    data, split_at = first_images(data, args)
    tracked = (args.track_layer_inputs or args.compare == DEFAULT
               or args.layer_inputs_of is not None)
    settings = Settings(
        dataset=args.dataset, data_dir=args.data_dir, limit=args.limit,
        data_sha256=data_sha256(data), classes=classes, class_names=tuple(names),
        image_preparation=preparation, preprocess=preprocess, split_at=split_at,
        epochs=args.epochs, batch_size=args.batch_size[0], batch_sizes=tuple(args.batch_size),
        validation_split=args.validation_split,
        learning_rate=args.learning_rate[0], learning_rates=tuple(args.learning_rate),
        batchnorm=not args.no_batchnorm, network=None, bn_momentum=args.bn_momentum,
        seed=seed_of(args),
        fast=args.fast, steps_per_execution=fast.steps_per_execution(args.fast, args.sync_bn),
        precision=place.precision, distribute=args.distribute, sync_bn=args.sync_bn,
        strategy=place.strategy,
        replicas=place.strategy.num_replicas_in_sync if place.strategy else 1,
        recompute_bn_stats=args.recompute_bn_stats,
        track_batch_stats=args.track_batch_stats or bool(args.compare),
        layer_inputs_of=(args.layer_inputs_of or DEFAULT_LAYER) if tracked else None,
        tensorboard=args.tensorboard, pictures=not args.no_plot, verbose=args.verbose,
        restart=args.restart, compare=args.compare, top_dir=place.output_dir)
    return settings, data
