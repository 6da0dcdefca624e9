"""Facts about the data sets, defined once: sizes, class names and file names. Imports no
TensorFlow, so the tests' data writer and the benchmark use it too."""
import os
from pathlib import Path

# Official sizes, to tell the user when a data folder holds a subset. "own" data
# (--dataset own) has no official size; its classes come from its labels.
DATASETS = {
    "kmnist": {"classes": 10, "train": 60_000, "test": 10_000},
    "k49": {"classes": 49, "train": 232_365, "test": 38_547},
    "mnist": {"classes": 10, "train": 60_000, "test": 10_000},
    "fashion_mnist": {"classes": 10, "train": 60_000, "test": 10_000},
}
OWN = "own"
# The files keras.datasets caches in $KERAS_HOME/datasets/: all --data-dir reads for these two.
KERAS_DATASET_FILES = {
    "mnist": ("mnist.npz",),
    "fashion_mnist": tuple(f"fashion-mnist/{name}" for name in (
        "train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz")),
}
# Keras' mnist.npz: its four arrays, in PARTS' order. --dataset own: one .npz with the
# same four arrays, and an optional text file with one class name per line.
MNIST_NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")
OWN_DATA_FILE = "data.npz"
OWN_CLASS_NAMES_FILE = "class_names.txt"
FASHION_MNIST_CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                             "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
# KMNIST class index -> (hiragana, romanization).
KMNIST_CLASS_NAMES = [
    ("お", "o"), ("き", "ki"), ("す", "su"), ("つ", "tsu"), ("な", "na"),
    ("は", "ha"), ("ま", "ma"), ("や", "ya"), ("れ", "re"), ("を", "wo"),
]
PARTS = ("train_imgs", "train_labels", "test_imgs", "test_labels")
DATASET_HOME = "http://codh.rois.ac.jp/kmnist/"


def keras_cache_dir():
    """The folder where keras.utils.get_file, and so extra-keras-datasets, caches downloads."""
    base = os.path.expanduser(os.environ.get("KERAS_HOME", os.path.join("~", ".keras")))
    if not os.access(base, os.W_OK):  # get_file falls back the same way
        base = os.path.join("/tmp", ".keras")
    return Path(base) / "datasets"


def official_file_names(dataset):
    """The names the dataset's site gives its four files, e.g. kmnist-train-imgs.npz."""
    return {part: f"{dataset}-{part.replace('_', '-')}.npz" for part in PARTS}


def cache_file_names(dataset):
    """The names extra-keras-datasets gives them in the Keras cache."""
    return {part: f"kmnist.npz_{dataset}_{part}" for part in PARTS}


def folder_paths(folder, dataset="kmnist"):
    """The four paths --data-dir reads in `folder`."""
    return {part: Path(folder) / name for part, name in official_file_names(dataset).items()}


def class_names(dataset, classes, own_names=None):
    """Pairs of (name, plain-text fallback): KMNIST's characters and romanizations, the
    Fashion-MNIST item names, own data's names when given, else the class numbers."""
    if dataset == "kmnist":
        return KMNIST_CLASS_NAMES
    if dataset == "fashion_mnist":
        return [(name, name) for name in FASHION_MNIST_CLASS_NAMES]
    if own_names:
        return [(name, name) for name in own_names]
    return [(str(i), str(i)) for i in range(classes)]
