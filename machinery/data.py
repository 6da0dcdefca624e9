"""Loading the data: through extra-keras-datasets and the Keras cache, or from the
official files in --data-dir; every array checked before any training starts."""
import os
import zipfile
from pathlib import Path

import numpy as np

from machinery.datasets import (DATASET_HOME, DATASETS, PARTS, cache_file_names,
                                folder_paths, official_file_names)
from machinery.errors import ScriptError
from machinery.quiet import quiet_package_logging


def keras_cache_dir():
    """The folder where keras.utils.get_file, and so extra-keras-datasets, caches downloads."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK):  # get_file falls back the same way
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "datasets"


def cache_files(dataset):
    """The four cache paths extra-keras-datasets reads for `dataset`."""
    return {part: keras_cache_dir() / name for part, name in cache_file_names(dataset).items()}


def check_npz(path, advice):
    """Read only the header of the array in an .npz; refuse anything numpy would unpickle."""
    try:
        with zipfile.ZipFile(path) as archive:
            if "arr_0.npy" not in archive.namelist():
                raise ScriptError(
                    f"{path} has no array 'arr_0' (it holds {archive.namelist()}), "
                    f"so it is not a KMNIST file: {advice}"
                )
            with archive.open("arr_0.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                _, _, dtype = read_header(member)
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is truncated or not an .npz archive ({err}): {advice}") from None
    if dtype.hasobject:
        raise ScriptError(
            f"{path} holds Python objects, which would have to be unpickled to be read; "
            f"refusing it: {advice}"
        )


def read_npz(path, advice):
    check_npz(path, advice)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["arr_0"]
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as err:
        raise ScriptError(f"{path} is damaged ({err}): {advice}") from None


def load_from_folder(dataset, data_dir):
    """Read the four official .npz files from `data_dir`, with no network at all."""
    folder = Path(data_dir)
    if not folder.is_dir():
        raise ScriptError(
            f"--data-dir {folder} is not a folder: create it and put the four "
            f"{dataset} .npz files from {DATASET_HOME} in it"
        )
    paths = folder_paths(folder, dataset)
    missing = [path.name for path in paths.values() if not path.is_file()]
    if missing:
        raise ScriptError(
            f"--data-dir {folder} lacks {', '.join(missing)}: download them from "
            f"{DATASET_HOME} into that folder"
        )
    advice = f"replace it with the official file from {DATASET_HOME}"
    return paths, {part: read_npz(path, advice) for part, path in paths.items()}


def load_with_package(dataset, redownload=False):
    """Load through extra-keras-datasets, which downloads into the Keras cache once."""
    from extra_keras_datasets import kmnist

    files = cache_files(dataset)
    if redownload:
        for path in files.values():
            path.unlink(missing_ok=True)
    advice = "run again with --redownload to replace it"
    for path in files.values():
        if path.exists():
            check_npz(path, advice)
    try:
        with quiet_package_logging():
            (x_train, y_train), (x_test, y_test) = kmnist.load_data(type=dataset)
    except Exception as err:  # the package raises bare Exception for failed downloads
        if "URL fetch failure" in str(err):
            raise ScriptError(
                f"could not download {dataset.upper()} ({err}). Offline? Put the four "
                f"files from {DATASET_HOME} ({', '.join(official_file_names(dataset).values())}) "
                f"in a folder and pass --data-dir FOLDER, or copy them into {keras_cache_dir()} "
                f"as {', '.join(p.name for p in files.values())}"
            ) from None
        raise ScriptError(
            f"could not read the cached {dataset} files in {keras_cache_dir()} "
            f"({type(err).__name__}: {err}): {advice}"
        ) from None
    return files, dict(zip(PARTS, (x_train, y_train, x_test, y_test)))


def problem_with(images, labels, image_file, label_file, classes):
    """What is wrong with one images/labels pair, or None."""
    if images.dtype != np.uint8:
        return f"{image_file}: images are {images.dtype}, expected uint8"
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        return f"{image_file}: images have shape {images.shape}, expected (N, 28, 28)"
    if len(images) == 0:
        return f"{image_file} holds no images"
    if not np.issubdtype(labels.dtype, np.integer):
        return f"{label_file}: labels are {labels.dtype}, expected integers"
    if labels.ndim != 1:
        return f"{label_file}: labels have shape {labels.shape}, expected (N,)"
    if len(labels) != len(images):
        return (f"{label_file} holds {len(labels)} labels but {image_file} holds "
                f"{len(images)} images")
    if labels.min() < 0 or labels.max() >= classes:
        return (f"{label_file}: labels run from {labels.min()} to {labels.max()}, "
                f"expected 0 to {classes - 1}")
    return None


def check_arrays(arrays, sources, classes):
    """Stop with a message naming the file if the arrays are not KMNIST-shaped."""
    for subset in ("train", "test"):
        images, labels = f"{subset}_imgs", f"{subset}_labels"
        problem = problem_with(arrays[images], arrays[labels], sources[images],
                               sources[labels], classes)
        if problem:
            raise ScriptError(f"{problem}: use the official files from {DATASET_HOME}")


def load(dataset="kmnist", data_dir=None, redownload=False):
    """Return (x_train, y_train), (x_test, y_test) as uint8 images and integer labels."""
    if data_dir is None:
        sources, arrays = load_with_package(dataset, redownload)
    else:
        sources, arrays = load_from_folder(dataset, data_dir)
    check_arrays(arrays, sources, DATASETS[dataset]["classes"])
    return (arrays["train_imgs"], arrays["train_labels"]), (
        arrays["test_imgs"], arrays["test_labels"])


def training_image_count(images, split):
    """How many of `images` training images fit() trains on: Keras holds out the last
    `split` of them, rounding the training share down."""
    return int(images * (1 - split))


def for_this_run(data, dataset, limit, split):
    """Note a subset, keep the first `limit` images, and check the split leaves both parts."""
    (x_train, y_train), (x_test, y_test) = data
    official = DATASETS[dataset]
    if (len(x_train), len(x_test)) != (official["train"], official["test"]):
        print(f"Note: loaded {len(x_train):,} training and {len(x_test):,} test images; "
              f"the official {dataset.upper()} has {official['train']:,} and "
              f"{official['test']:,}.")
    if limit:
        x_train, y_train, x_test, y_test = (a[:limit] for a in (x_train, y_train, x_test, y_test))
    kept = training_image_count(len(x_train), split)
    if kept < 1 or kept == len(x_train):
        raise ScriptError(
            f"{len(x_train)} training image(s) with --validation-split {split} leave "
            f"{kept} for training and {len(x_train) - kept} for validation: "
            "use more images (--limit) or another split"
        )
    return (x_train, y_train), (x_test, y_test)
