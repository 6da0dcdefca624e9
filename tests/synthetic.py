"""Small, learnable stand-ins for KMNIST in the dataset's own file formats.

Never KMNIST itself: each class is a fixed random pattern, shifted by a few
pixels and drowned in noise. Used by the tests and by bench/.
"""
from pathlib import Path

import numpy as np

PARTS = ("train_imgs", "train_labels", "test_imgs", "test_labels")


def class_patterns(classes, shared=0.0, seed=1234):
    """One 28x28 pattern of 4x4 blocks per class; `shared` of it is common to all
    classes, which makes them harder to tell apart."""
    rng = np.random.default_rng(seed)
    common = rng.random((7, 7)) > 0.6
    own = rng.random((classes, 7, 7)) > 0.6
    return np.kron(shared * common + (1 - shared) * own, np.ones((4, 4))) * 200.0


def make_arrays(train=600, test=200, classes=10, seed=0, shared=0.0, noise=70.0, shift=3):
    """{'train_imgs': uint8 (N, 28, 28), 'train_labels': uint8 (N,), ...}

    The defaults are learnable in a few steps (for smoke tests); the benchmark
    uses shared=0.7, noise=100, shift=4, which takes a few epochs, as KMNIST does."""
    rng = np.random.default_rng(seed)
    patterns = class_patterns(classes, shared)
    arrays = {}
    for kind, count in (("train", train), ("test", test)):
        labels = rng.integers(0, classes, count)
        shifts = rng.integers(-shift, shift + 1, (count, 2))
        shifted = np.stack([np.roll(patterns[label], tuple(offset), axis=(0, 1))
                            for label, offset in zip(labels, shifts)])
        images = shifted + rng.normal(0.0, noise, (count, 28, 28))
        images = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{kind}_imgs"] = images
        arrays[f"{kind}_labels"] = labels.astype(np.uint8)
    return arrays


def save_npz(path, array):
    """Store like the dataset's site does: one array under the key arr_0."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object keeps numpy from appending .npz
        np.savez_compressed(f, array)
    return path


def cache_paths(keras_home, dataset="kmnist"):
    """The names extra-keras-datasets gives the files in the Keras cache."""
    return {part: Path(keras_home) / "datasets" / f"kmnist.npz_{dataset}_{part}"
            for part in PARTS}


def folder_paths(folder, dataset="kmnist"):
    """The names of the files on the dataset's site, as --data-dir expects them."""
    return {part: Path(folder) / f"{dataset}-{part.replace('_', '-')}.npz" for part in PARTS}


def write(paths, arrays):
    for part, path in paths.items():
        save_npz(path, arrays[part])
    return paths
