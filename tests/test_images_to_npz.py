"""tools/images_to_npz.py: each bad input is one line on stderr and an exit code, and
nothing already there is lost (docs/data.md, 'Your own data'). The good path is run as
the docs give it in tests/test_datasets.py."""
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT

TOOL = ROOT / "tools" / "images_to_npz.py"


def convert(*args, cwd=None):
    done = subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=60, cwd=cwd)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stderr.splitlines()


def image_folder(root, classes=("a", "b"), count=3):
    for name in classes:
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.fromarray(np.full((30, 30), 40 * i, np.uint8)).save(root / name / f"{i}.png")
    return root


def test_a_good_folder_gives_labels_in_the_sorted_order_of_the_class_folders(tmp_path):
    images = image_folder(tmp_path / "images", classes=("zebra", "ant", "moth"), count=5)
    Image.new("RGB", (50, 20), "white").save(images / "ant" / "wide.JPG")
    code, lines = convert(images, tmp_path / "out")
    assert (code, lines) == (0, [])
    assert (tmp_path / "out" / "class_names.txt").read_text() == "ant\nmoth\nzebra\n"
    with np.load(tmp_path / "out" / "data.npz") as data:
        labels = np.concatenate([data["y_train"], data["y_test"]])
        images_out = np.concatenate([data["x_train"], data["x_test"]])
    assert np.bincount(labels).tolist() == [6, 5, 5]
    assert images_out.shape == (16, 28, 28)
    # The white JPEG, resized and made grayscale, is the one all-255 image.
    assert [int(i.min()) for i in images_out].count(255) == 1


@pytest.mark.parametrize("case, words", [
    ("not a folder", "is not a folder: give a folder holding one sub-folder of images per class"),
    ("no class folders", "holds 0 sub-folder(s): put each class's images in a sub-folder"),
    ("one class folder", "holds 1 sub-folder(s): put each class's images in a sub-folder"),
    ("a class without images", "b holds no .png or .jpg image"),
    ("an unreadable image", "1.png cannot be read as an image (UnidentifiedImageError): "
                            "replace it or remove it"),
    ("a truncated image", "2.png cannot be read as an image (OSError): replace it or remove it"),
    ("four images", "holds 4 images: a test set of a fifth needs at least 5"),
])
def test_bad_input_is_one_line_and_exit_1(case, words, tmp_path):
    images = tmp_path / "images"
    if case == "not a folder":
        images = tmp_path / "none"
    elif case == "no class folders":
        images.mkdir()
        Image.new("L", (28, 28)).save(images / "loose.png")
    elif case == "one class folder":
        image_folder(images, classes=("a",))
    elif case == "a class without images":
        image_folder(images, classes=("a",))
        (images / "b").mkdir()
        (images / "b" / "notes.txt").write_text("no image here")
    elif case == "four images":
        image_folder(images, count=2)
    else:
        image_folder(images)
        bad = images / "b" / ("1.png" if case == "an unreadable image" else "2.png")
        bad.write_bytes(b"not a png" if case == "an unreadable image"
                        else bad.read_bytes()[:60])
    code, lines = convert(images, tmp_path / "out")
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert not (tmp_path / "out" / "data.npz").exists()
    assert not (tmp_path / "out" / "data.npz.partial").exists()


def test_an_existing_data_npz_is_never_overwritten(tmp_path):
    images = image_folder(tmp_path / "images")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "data.npz").write_bytes(b"mine")
    code, lines = convert(images, tmp_path / "out")
    assert code == 1 and len(lines) == 1
    assert "data.npz exists already: choose another OUTPUT_FOLDER" in lines[0]
    assert (tmp_path / "out" / "data.npz").read_bytes() == b"mine"


def test_an_output_folder_that_cannot_be_made_is_one_line(tmp_path):
    images = image_folder(tmp_path / "images")
    (tmp_path / "file").write_text("a file, not a folder")
    code, lines = convert(images, tmp_path / "file" / "out")
    assert code == 1 and len(lines) == 1
    assert lines[0].startswith(f"error: cannot write {tmp_path / 'file' / 'out'}")
    assert "choose another OUTPUT_FOLDER" in lines[0]


def test_a_bad_command_line_is_one_line_and_exit_2(tmp_path):
    code, lines = convert(tmp_path)
    assert code == 2 and len(lines) == 1
    assert lines[0] == ("error: the following arguments are required: OUTPUT_FOLDER "
                        "(see --help)")


def test_each_image_keeps_its_own_label_when_the_images_are_mixed(tmp_path):
    # Every image differs: class c's image i is a bright square at a place of its class
    # (row 2 + 8c) of brightness 100 + 10i, light on dark at 28x28 (kept as it is). A
    # label mixed apart from its image no longer matches the square's place.
    for c, name in enumerate(("a", "b", "c")):
        (tmp_path / "images" / name).mkdir(parents=True)
        for i in range(6):
            pixels = np.zeros((28, 28), np.uint8)
            pixels[2 + 8 * c:8 + 8 * c, 10:16] = 100 + 10 * i
            Image.fromarray(pixels).save(tmp_path / "images" / name / f"{i}.png")
    code, lines = convert(tmp_path / "images", tmp_path / "out")
    assert (code, lines) == (0, [])
    with np.load(tmp_path / "out" / "data.npz") as data:
        images = np.concatenate([data["x_train"], data["x_test"]])
        labels = np.concatenate([data["y_train"], data["y_test"]])
    found = []
    for image, label in zip(images, labels):
        place = (int(np.argmax(image[:, 12])) - 2) // 8
        found.append((int(label), place, int(image.max())))
    assert all(label == place for label, place, _ in found), found
    assert sorted(found) == [(c, c, 100 + 10 * i) for c in range(3) for i in range(6)]
    assert labels.tolist() != sorted(labels.tolist())  # mixed, not one class after another


def test_every_image_is_made_light_on_dark_however_it_was_drawn(tmp_path):
    # One light-on-dark digit-like stroke per class, drawn three ways at 28x28: dark
    # ink on a white page, light ink on black (RGB), black ink on a transparent page
    # whose transparent pixels store black. Each becomes the light-on-dark stroke itself.
    strokes = []
    for c, name in enumerate(("a", "b")):
        stroke = np.zeros((28, 28), np.uint8)
        stroke[4:24, 6 + 10 * c:10 + 10 * c] = 255
        stroke[4:7, 6:22] = 90 + 60 * c  # a fainter bar, to tell the classes apart
        strokes.append(stroke)
        (tmp_path / "images" / name).mkdir(parents=True)
        Image.fromarray(255 - stroke).save(tmp_path / "images" / name / "dark.png")
        Image.fromarray(stroke).convert("RGB").save(tmp_path / "images" / name / "light.png")
        black_ink = np.dstack([np.zeros((28, 28, 3), np.uint8), stroke])
        Image.fromarray(black_ink).save(tmp_path / "images" / name / "ink.png")
    code, lines = convert(tmp_path / "images", tmp_path / "out")
    assert (code, lines) == (0, [])
    with np.load(tmp_path / "out" / "data.npz") as data:
        images = np.concatenate([data["x_train"], data["x_test"]])
        labels = np.concatenate([data["y_train"], data["y_test"]])
    assert sorted(labels.tolist()) == [0, 0, 0, 1, 1, 1]
    for image, label in zip(images, labels):
        assert np.array_equal(image, strokes[label]), label
