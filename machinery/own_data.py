"""--dataset own (docs/data.md, "Your own data"): data.npz in --data-dir, four arrays laid out as
Keras' mnist.npz, labels 0 to C-1 without gaps (C taken from them); an optional class_names.txt,
one name a line; tools/images_to_npz.py's preparation.json, recorded in run.json for --predict."""
import json
from pathlib import Path

import numpy as np

from machinery.datasets import MNIST_NPZ_ARRAYS, OWN_CLASS_NAMES_FILE, OWN_DATA_FILE, PARTS
from machinery.errors import ScriptError
from machinery.images import PREPARATION_FILE, dark_on_light
from machinery.npz import read_npz

ADVICE = "see docs/data.md, 'Your own data'"


def load(data_dir):
    """(sources, arrays) from the own-data folder (machinery/cli.py refuses --dataset own
    without --data-dir); nothing is ever unpickled."""
    path = Path(data_dir) / OWN_DATA_FILE
    if not path.is_file():
        raise ScriptError(f"--data-dir {data_dir} lacks {OWN_DATA_FILE}: {ADVICE}")
    arrays = dict(zip(PARTS, read_npz(path, ADVICE, MNIST_NPZ_ARRAYS, kind="own-data")))
    return {part: f"{path} ({key})" for part, key in zip(PARTS, MNIST_NPZ_ARRAYS)}, arrays


# The most classes own data may have (the checks refuse larger labels): far more
# than 28x28 images can tell apart.
MAX_CLASSES = 1000


def class_count(train, test, source):
    """C, from labels already checked to lie in 0..MAX_CLASSES-1: one more than the
    largest. Every class must have training images, or the numbering has a gap."""
    classes = int(max(train.max(), test.max())) + 1
    missing = sorted(set(range(classes)) - set(np.unique(train).tolist()))
    if missing:
        raise ScriptError(
            f"{source}: labels run from 0 to {classes - 1} but no training "
            f"image has label {', '.join(map(str, missing[:5]))}: number the classes "
            f"0 to C-1 without gaps ({ADVICE})")
    return classes


def class_names(data_dir, classes):
    """The names in class_names.txt, or None when there is no such file."""
    path = Path(data_dir) / OWN_CLASS_NAMES_FILE
    if not path.is_file():
        return None
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
                 if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ScriptError(f"{path} cannot be read as UTF-8 text ({err}): {ADVICE}") from None
    if len(names) != classes:
        raise ScriptError(f"{path} names {len(names)} classes but the labels have {classes}: "
                          f"give one name per line, in label order ({ADVICE})")
    return names


def preparation(data_dir, x_train):
    """The preparation in preparation.json beside data.npz, or None, with a note if most training
    images are dark on light: --predict, making every image light on dark, would not match them."""
    path = Path(data_dir) / PREPARATION_FILE
    if not path.is_file():
        dark = int(dark_on_light(x_train).sum())
        if dark > len(x_train) / 2:
            print(f"Note: {dark:,} of the {len(x_train):,} training images are dark on "
                  "light, but --predict makes every image light on dark, as KMNIST and "
                  "MNIST store theirs: make data.npz with tools/images_to_npz.py, or "
                  f"invert the images (255 - x) ({ADVICE}).")
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        raise ScriptError(f"{path} cannot be read ({type(err).__name__}): make the folder "
                          f"again with tools/images_to_npz.py, or delete {PREPARATION_FILE} "
                          f"({ADVICE})") from None
    return record
