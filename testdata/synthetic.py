"""Synthetic stand-ins for KMNIST in the dataset's own file formats, for the tests
and the benchmark. Never KMNIST, never presented as it: each class is a fixed
random pattern, shifted by a few pixels and drowned in noise. Imports no TensorFlow.
"""
from pathlib import Path

import numpy as np

from machinery.datasets import PARTS, cache_file_names, folder_paths  # noqa: F401

# Harder than the tests' defaults: takes a few epochs to learn, as KMNIST does.
BENCHMARK_DIFFICULTY = dict(shared=0.7, noise=100.0, shift=4)


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
    uses BENCHMARK_DIFFICULTY."""
    rng = np.random.default_rng(seed)
    patterns = class_patterns(classes, shared)
    arrays = {}
    for subset, count in (("train", train), ("test", test)):
        labels = rng.integers(0, classes, count)
        shifts = rng.integers(-shift, shift + 1, (count, 2))
        shifted = np.stack([np.roll(patterns[label], tuple(offset), axis=(0, 1))
                            for label, offset in zip(labels, shifts)])
        images = shifted + rng.normal(0.0, noise, (count, 28, 28))
        arrays[f"{subset}_imgs"] = np.clip(images, 0, 255).astype(np.uint8)
        arrays[f"{subset}_labels"] = labels.astype(np.uint8)
    return arrays


def save_npz(path, array):
    """Store like the dataset's site does: one array under the key arr_0."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:  # a file object keeps numpy from appending .npz
        np.savez_compressed(f, array)
    return path


def cache_paths(keras_home, dataset="kmnist"):
    """Where extra-keras-datasets keeps the files in a Keras cache at `keras_home`."""
    return {part: Path(keras_home) / "datasets" / name
            for part, name in cache_file_names(dataset).items()}


def write(paths, arrays):
    for part, path in paths.items():
        save_npz(path, arrays[part])
    return paths


def write_folder(folder, train, test, **difficulty):
    """Write a --data-dir folder of synthetic data (the benchmark runs this in a child)."""
    return write(folder_paths(folder), make_arrays(train, test, **difficulty))
