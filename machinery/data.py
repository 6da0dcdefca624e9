"""Loading the data: through extra-keras-datasets and the Keras cache, or from the
official files in --data-dir; every array checked before any training starts."""
from pathlib import Path

import numpy as np

from machinery import keras_datasets, own_data
from machinery.datasets import (DATASET_HOME, DATASETS, KERAS_DATASET_FILES, OWN, PARTS,
                                cache_file_names, folder_paths, keras_cache_dir,
                                official_file_names)
from machinery.errors import ScriptError
from machinery.npz import check_npz, read_npz
from machinery.quiet import quiet_package_logging


def cache_files(dataset):
    """The four cache paths extra-keras-datasets reads for `dataset`."""
    return {part: keras_cache_dir() / name for part, name in cache_file_names(dataset).items()}


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
    """Through extra-keras-datasets, which downloads into the Keras cache once."""
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


def check_arrays(arrays, sources, classes, advice=f"use the official files from {DATASET_HOME}"):
    """Stop with a message naming the file if the arrays are not KMNIST-shaped."""
    for subset in ("train", "test"):
        images, labels = f"{subset}_imgs", f"{subset}_labels"
        problem = problem_with(arrays[images], arrays[labels], sources[images],
                               sources[labels], classes)
        if problem:
            raise ScriptError(f"{problem}: {advice}")


def load(dataset="kmnist", data_dir=None, redownload=False):
    """Return (x_train, y_train), (x_test, y_test) as uint8 images and integer labels."""
    if dataset == OWN:
        sources, arrays = own_data.load(data_dir)
        check_arrays(arrays, sources, own_data.MAX_CLASSES, own_data.ADVICE)
        # refuses a gap in the numbering
        own_data.class_count(arrays["train_labels"], arrays["test_labels"],
                             sources["train_labels"])
    elif dataset in KERAS_DATASET_FILES:
        sources, arrays = keras_datasets.load(dataset, data_dir, redownload)
        check_arrays(arrays, sources, DATASETS[dataset]["classes"], keras_datasets.ADVICE)
    else:
        sources, arrays = (load_with_package(dataset, redownload) if data_dir is None
                           else load_from_folder(dataset, data_dir))
        check_arrays(arrays, sources, DATASETS[dataset]["classes"])
    return (arrays["train_imgs"], arrays["train_labels"]), (
        arrays["test_imgs"], arrays["test_labels"])
