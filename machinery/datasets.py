"""Facts about the data sets, defined once: sizes, class names and file names.

Imports no TensorFlow, so the tests' data writer and the benchmark use it too."""
from pathlib import Path

# Official sizes, to tell the user when a data folder holds a subset.
DATASETS = {
    "kmnist": {"classes": 10, "train": 60_000, "test": 10_000},
    "k49": {"classes": 49, "train": 232_365, "test": 38_547},
}
# KMNIST class index -> (hiragana, romanization).
KMNIST_CLASS_NAMES = [
    ("お", "o"), ("き", "ki"), ("す", "su"), ("つ", "tsu"), ("な", "na"),
    ("は", "ha"), ("ま", "ma"), ("や", "ya"), ("れ", "re"), ("を", "wo"),
]
PARTS = ("train_imgs", "train_labels", "test_imgs", "test_labels")
DATASET_HOME = "http://codh.rois.ac.jp/kmnist/"


def official_file_names(dataset):
    """The names the dataset's site gives its four files, e.g. kmnist-train-imgs.npz."""
    return {part: f"{dataset}-{part.replace('_', '-')}.npz" for part in PARTS}


def cache_file_names(dataset):
    """The names extra-keras-datasets gives them in the Keras cache."""
    return {part: f"kmnist.npz_{dataset}_{part}" for part in PARTS}


def folder_paths(folder, dataset="kmnist"):
    """The four paths --data-dir reads in `folder`."""
    return {part: Path(folder) / name for part, name in official_file_names(dataset).items()}


def class_names(dataset):
    """Pairs of (character, romanization) for KMNIST; class numbers for K49."""
    if dataset == "kmnist":
        return KMNIST_CLASS_NAMES
    return [(str(i), str(i)) for i in range(DATASETS[dataset]["classes"])]
