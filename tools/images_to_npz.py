"""Turn a folder of images, one sub-folder per class, into the data.npz that
`python model_batchnorm.py --dataset own --data-dir OUTPUT_FOLDER` reads.

    python tools/images_to_npz.py IMAGES_FOLDER OUTPUT_FOLDER

IMAGES_FOLDER/cat/*.png, IMAGES_FOLDER/dog/*.jpg, ...: each sub-folder is a class,
numbered in the sorted order of the sub-folders' names. Every image (PNG or JPEG)
is prepared as --predict prepares new images (machinery/images.py): 28x28 grayscale
uint8, light ink on a dark background, as KMNIST and MNIST store theirs. The images
are mixed with a fixed seed and a fifth of them become the test set, so that the
last 20% of the training arrays (the lesson's validation split) hold every class
too. OUTPUT_FOLDER gets data.npz (x_train, y_train, x_test, y_test, the layout of
Keras' mnist.npz), class_names.txt (one name per line, in label order) and
preparation.json (how the images were prepared, which a run records in run.json).

Needs only NumPy and Pillow (which matplotlib brings): of this project it imports
machinery/images.py alone. Bad input is one line on stderr and exit code 1 (2 for a
bad command line); an existing data.npz is never overwritten.
"""
import argparse
import contextlib
import os
import sys
from pathlib import Path

import numpy as np

# The project's folder, so that machinery/images.py imports from wherever this runs.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from machinery import images as preparation  # noqa: E402  (after the path is set)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
TEST_FRACTION = 5  # one image in five is for testing
SEED = 0


class InputError(Exception):
    """Bad input, told in one line; `code` is the exit code."""

    code = 1


class UsageError(InputError):
    code = 2


class OneLineParser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def class_folders(source):
    """The sorted class sub-folders of `source`, each with its sorted image files."""
    if not source.is_dir():
        raise InputError(f"{source} is not a folder: give a folder holding one "
                         "sub-folder of images per class")
    folders = sorted((p for p in source.iterdir() if p.is_dir()), key=lambda p: p.name)
    if len(folders) < 2:
        raise InputError(f"{source} holds {len(folders)} sub-folder(s): put each class's "
                         "images in a sub-folder of its own, at least two classes")
    classes = []
    for folder in folders:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"{folder} holds no .png or .jpg image: add its class's "
                             "images, or move the folder out of the way")
        classes.append((folder.name, files))
    return classes


def read_image(path):
    """(28x28 uint8 light on dark, whether it was inverted): preparation.prepare_file."""
    try:
        return preparation.prepare_file(path)
    except preparation.UNREADABLE as err:
        raise InputError(f"{path} cannot be read as an image ({type(err).__name__}): "
                         "replace it or remove it") from None


def convert(source, target):
    """Write target/data.npz, class_names.txt and preparation.json there; returns
    (names, train, test, how many images were inverted)."""
    data, names_file = target / "data.npz", target / "class_names.txt"
    if data.exists():
        raise InputError(f"{data} exists already: choose another OUTPUT_FOLDER, or delete "
                         "it first (it is never overwritten)")
    classes = class_folders(source)
    names = [name for name, _ in classes]
    images, inverted = zip(*(read_image(f) for _, files in classes for f in files))
    images = np.stack(images)
    labels = np.concatenate([np.full(len(files), label) for label, (_, files)
                             in enumerate(classes)]).astype(np.uint16 if len(names) > 256
                                                            else np.uint8)
    if len(labels) < TEST_FRACTION:
        raise InputError(f"{source} holds {len(labels)} images: a test set of a fifth "
                         f"needs at least {TEST_FRACTION}")
    order = np.random.default_rng(SEED).permutation(len(labels))  # mix the classes
    test, train = order[:len(order) // TEST_FRACTION], order[len(order) // TEST_FRACTION:]
    try:
        target.mkdir(parents=True, exist_ok=True)
        partial = target / "data.npz.partial"
        with open(partial, "wb") as f:
            np.savez_compressed(f, x_train=images[train], y_train=labels[train],
                                x_test=images[test], y_test=labels[test])
        names_file.write_text("\n".join(names) + "\n", encoding="utf-8")
        preparation.write_record(target)  # before data.npz, which is never without it
        os.replace(partial, data)
    except OSError as err:
        with contextlib.suppress(OSError):  # no half-written file left behind
            (target / "data.npz.partial").unlink()
        raise InputError(f"cannot write {err.filename or target} ({err.strerror}): "
                         "choose another OUTPUT_FOLDER") from None
    return names, len(train), len(test), sum(inverted)


def main(argv=None):
    parser = OneLineParser(description="Make data.npz for --dataset own from a folder of "
                           "images, one sub-folder per class.")
    parser.add_argument("images", type=Path, metavar="IMAGES_FOLDER",
                        help="one sub-folder of PNG or JPEG images per class")
    parser.add_argument("output", type=Path, metavar="OUTPUT_FOLDER",
                        help="where data.npz and class_names.txt go")
    args = parser.parse_args(argv)
    names, train, test, inverted = convert(args.images, args.output)
    print(f"Wrote {args.output / 'data.npz'}: {len(names)} classes ({', '.join(names[:10])}"
          f"{', ...' if len(names) > 10 else ''}), {train} training and {test} test images, "
          f"light on dark ({inverted} inverted); their names in "
          f"{args.output / 'class_names.txt'}, their preparation in "
          f"{args.output / preparation.PREPARATION_FILE}.")


def command_line(argv=None):
    """main(argv) with bad input as one line on stderr and an exit code."""
    try:
        main(argv)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    return 0


if __name__ == "__main__":
    sys.exit(command_line())
