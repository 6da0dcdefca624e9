"""MNIST and Fashion-MNIST, the data sets the lesson names as alternatives, through
keras.datasets and Keras' own cache ($KERAS_HOME/datasets/), or from --data-dir."""
import gzip
import os
from pathlib import Path

import numpy as np

from machinery.datasets import KERAS_DATASET_FILES, MNIST_NPZ_ARRAYS, PARTS, keras_cache_dir
from machinery.errors import ScriptError
from machinery.npz import read_npz
from machinery.quiet import keras

ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
# The official mnist.npz's SHA-256, as keras.datasets.mnist checks it: a cached file
# that differs is downloaded again. The tests, and only they, name their fixture's
# hash in this environment variable (docs/development.md, "Tests").
MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
TEST_HASH_VARIABLE = "MODEL_BATCHNORM_TEST_MNIST_SHA256"
ADVICE = "run again with --redownload to fetch Keras' copy"
FASHION_PARTS = ("train_labels", "train_imgs", "test_labels", "test_imgs")  # its files'


def read_idx(path, magic, advice):
    """One gzipped IDX file as Fashion-MNIST stores it: labels (magic 2049) or images (2051)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ScriptError(f"{path} is truncated or not a gzip file ({err}): {advice}") from None
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    header = 8 if magic == 2049 else 16
    count = int.from_bytes(data[4:8], "big") if len(data) >= 8 else 0
    size = header + count * (1 if magic == 2049 else 28 * 28)
    if found != magic or len(data) != size:
        raise ScriptError(f"{path} is not an IDX file of {'labels' if magic == 2049 else '28x28 images'} "
                          f"({len(data)} bytes, magic {found}): {advice}")
    array = np.frombuffer(data, np.uint8, offset=header)
    return array if magic == 2049 else array.reshape(count, 28, 28)


def read_fashion_file(path, advice):
    """A labels file (magic 2049) or an images file (2051), told apart by its name."""
    return read_idx(path, 2049 if "labels" in path.name else 2051, advice)


def read_files(dataset, paths, advice):
    """(sources, arrays) from the data set's files, wherever they are: mnist.npz, or
    Fashion-MNIST's four files in FASHION_PARTS' order."""
    if dataset == "mnist":
        return (dict.fromkeys(PARTS, paths[0]),
                dict(zip(PARTS, read_npz(paths[0], advice, MNIST_NPZ_ARRAYS, kind="MNIST"))))
    sources = dict(zip(FASHION_PARTS, paths))
    return sources, {part: read_fashion_file(path, advice) for part, path in sources.items()}


def from_folder(dataset, data_dir):
    folder = Path(data_dir)
    paths = [folder / Path(name).name for name in KERAS_DATASET_FILES[dataset]]
    missing = [path.name for path in paths if not path.is_file()]
    if not folder.is_dir() or missing:
        raise ScriptError(f"--data-dir {folder} lacks {', '.join(missing or ['it'])}: put "
                          f"the files keras.datasets.{dataset} caches there "
                          f"({', '.join(Path(name).name for name in KERAS_DATASET_FILES[dataset])})")
    return read_files(dataset, paths,
                      f"replace it with the file keras.datasets.{dataset} downloads")


def download(dataset):
    """Fetch into Keras' cache what is not there yet, and a cached mnist.npz whose hash
    differs from the official file's, as keras.datasets.mnist does."""
    try:
        if dataset == "mnist":
            keras.utils.get_file("mnist.npz", origin=ORIGIN + "mnist.npz",
                                 file_hash=os.environ.get(TEST_HASH_VARIABLE, MNIST_SHA256))
        else:
            keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # get_file raises bare Exception for failed downloads
        if "URL fetch failure" not in str(err):
            raise
        files = [str(keras_cache_dir() / name) for name in KERAS_DATASET_FILES[dataset]]
        raise ScriptError(
            f"could not download {dataset} ({err}). Offline? Copy {', '.join(files)} there "
            f"from a machine that has them, or pass --data-dir FOLDER holding "
            f"{', '.join(Path(name).name for name in KERAS_DATASET_FILES[dataset])}") from None


def load(dataset, data_dir=None, redownload=False):
    """(sources, arrays) for mnist or fashion_mnist, checked like KMNIST's files."""
    if data_dir is not None:
        return from_folder(dataset, data_dir)
    paths = [keras_cache_dir() / name for name in KERAS_DATASET_FILES[dataset]]
    if redownload:
        for path in paths:
            path.unlink(missing_ok=True)
    if dataset == "fashion_mnist":  # Keras' own loader would raise on a damaged file
        for path in paths:
            if path.exists():
                read_fashion_file(path, ADVICE)
    download(dataset)
    return read_files(dataset, paths, ADVICE)
