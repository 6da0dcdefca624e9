"""The data sets the lesson names (MNIST and Fashion-MNIST through keras.datasets), your
own data (--dataset own), and TensorBoard logs. Fixtures are synthetic, in each data
set's real file format, so Keras' and the project's real loaders run on them."""
import gzip
import hashlib
import json
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.util import event_pb2

import model_batchnorm as mb
from conftest import KERAS_HOME, ROOT, cli, error_lines, run_script
from testdata import synthetic
from test_readme_errors import check_row

DATA_DOCS = (ROOT / "docs" / "data.md").read_text()
SMALL = ["--epochs", "1", "--verbose", "2"]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
           "Sneaker", "Bag", "Ankle boot"]  # README, as Zalando names them


@pytest.fixture
def mnist_cache():
    """mnist.npz in Keras' cache with its four keys, and its SHA-256 for the test seam."""
    arrays = synthetic.make_arrays(train=600, test=200, seed=4)
    path = KERAS_HOME / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, x_train=arrays["train_imgs"], y_train=arrays["train_labels"],
             x_test=arrays["test_imgs"], y_test=arrays["test_labels"])
    yield path, hashlib.sha256(path.read_bytes()).hexdigest(), arrays
    path.unlink(missing_ok=True)


def write_idx(path, array):
    """Fashion-MNIST's format: gzipped IDX, magic 2049 for labels, 2051 for images."""
    header = [2049, len(array)] if array.ndim == 1 else [2051, len(array), 28, 28]
    with gzip.open(path, "wb") as f:
        f.write(b"".join(n.to_bytes(4, "big") for n in header) + array.tobytes())


@pytest.fixture
def fashion_cache():
    arrays = synthetic.make_arrays(train=600, test=200, seed=5)
    folder = KERAS_HOME / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True, exist_ok=True)
    names = {"train-labels-idx1-ubyte.gz": "train_labels", "train-images-idx3-ubyte.gz":
             "train_imgs", "t10k-labels-idx1-ubyte.gz": "test_labels",
             "t10k-images-idx3-ubyte.gz": "test_imgs"}
    for name, part in names.items():
        write_idx(folder / name, arrays[part])
    yield folder, arrays
    for name in names:
        (folder / name).unlink(missing_ok=True)


def test_mnist_runs_end_to_end_through_keras_cache(mnist_cache, tmp_path):
    path, sha256, arrays = mnist_cache
    done = run_script("--dataset", "mnist", "--output-dir", tmp_path, *SMALL,
                      env={"MODEL_BATCHNORM_TEST_MNIST_SHA256": sha256})
    assert done.returncode == 0, done.stderr
    assert re.search(r"^Test loss: \S+ / Test accuracy: \S+$", done.stdout, re.M)
    assert "Downloading" not in done.stdout and path.exists()  # the cached file was used
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["dataset"] == "mnist" and run["train_images"] == 480  # 600, less 20%
    assert [name for name, _ in run["config"]["class_names"]] == list("0123456789")
    assert (tmp_path / "confusion_matrix.png").stat().st_size > 0


def test_mnist_with_another_hash_is_fetched_again_and_offline_names_the_file(
        mnist_cache, tmp_path, capsys):
    # Without the seam, Keras' integrity check rejects the fixture and downloads again:
    # offline, that fails with one line naming the file Keras expects.
    path, _, _ = mnist_cache
    assert cli(["--dataset", "mnist", "--dry-run", "--output-dir", str(tmp_path)]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert line.startswith("error: could not download mnist")
    assert str(KERAS_HOME / "datasets" / "mnist.npz") in line and "--data-dir" in line


def test_fashion_mnist_runs_end_to_end_through_keras_own_loader(fashion_cache, tmp_path):
    done = run_script("--dataset", "fashion_mnist", "--output-dir", tmp_path, *SMALL)
    assert done.returncode == 0, done.stderr
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["dataset"] == "fashion_mnist" and run["test_images"] == 200
    assert [name for name, _ in run["config"]["class_names"]] == FASHION
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["loss"]) == 1


def test_fashion_mnist_arrays_are_the_files_arrays(fashion_cache):
    _, arrays = fashion_cache
    (x_train, y_train), (x_test, y_test) = mb.load_data("fashion_mnist")
    np.testing.assert_array_equal(x_train, arrays["train_imgs"])
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


def test_truncated_fashion_file_is_one_line(fashion_cache, tmp_path, capsys):
    folder, _ = fashion_cache
    bad = folder / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:100])
    assert cli(["--dataset", "fashion_mnist", "--dry-run", "--output-dir", str(tmp_path)]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert str(bad) in line and "--redownload" in line


OWN_DATA_COMMANDS = re.search(r"## Your own data.*?```sh\n(.*?)```", DATA_DOCS, re.S)


def make_png_tree(root):
    """images/<class>/*.png of several sizes and colour modes, as a user might have;
    half of each class (i % 4 of 2 or 3) dark on light."""
    from PIL import Image
    rng = np.random.default_rng(0)
    patterns = synthetic.class_patterns(3)
    for label, name in enumerate(["cat", "dog", "owl"]):
        (root / name).mkdir(parents=True)
        for i in range(40):
            pixels = np.clip(np.roll(patterns[label], i % 3) + rng.normal(0, 30, (28, 28)),
                             0, 255).astype(np.uint8)
            pixels = 255 - pixels if i % 4 >= 2 else pixels
            image = Image.fromarray(pixels).resize((32 + i % 5, 32 + i % 5))
            (image.convert("RGB") if i % 2 else image).save(root / name / f"{i}.png")


def docs_command(starts_with):
    """The argv of the docs' own-data command that starts so, `python` made this Python."""
    assert OWN_DATA_COMMANDS, "docs/data.md's 'Your own data' has no sh block"
    line, = [line for line in OWN_DATA_COMMANDS.group(1).splitlines()
             if line.startswith(starts_with)]
    return [sys.executable, *shlex.split(line)[1:]]


def test_docs_converter_command_makes_a_folder_that_trains(tmp_path):
    # The two commands exactly as docs/data.md gives them, run where images/ is;
    # the scripts' relative paths are the repository's.
    convert = docs_command("python tools/images_to_npz.py")
    train = docs_command("python model_batchnorm.py --dataset own")
    convert[1], train[1] = str(ROOT / convert[1]), str(ROOT / train[1])
    make_png_tree(tmp_path / "images")
    made = subprocess.run(convert, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    assert made.stdout == ("Wrote mydata/data.npz: 3 classes (cat, dog, owl), 96 training and "
                           "24 test images, light on dark (60 inverted); their names in "
                           "mydata/class_names.txt, their preparation in "
                           "mydata/preparation.json.\n")
    with np.load(tmp_path / "mydata" / "data.npz") as data:
        assert data["x_train"].shape == (96, 28, 28) and data["x_train"].dtype == np.uint8
        assert data["x_test"].shape == (24, 28, 28)
        y_train, y_test = data["y_train"], data["y_test"]
    # 40 images a class, mixed: every class in the test set and in the last 20% of
    # the training arrays (the validation split), not one class after another.
    assert np.bincount(np.concatenate([y_train, y_test])).tolist() == [40, 40, 40]
    assert set(y_test.tolist()) == set(y_train[-20:].tolist()) == {0, 1, 2}
    done = subprocess.run([*train, "--output-dir", "out", *SMALL], capture_output=True,
                          text=True, timeout=240, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Own data: 3 classes (labels 0 to 2, named in class_names.txt), 96 training and " \
           "24 test images." in done.stdout
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["config"]["classes"] == 3
    assert [name for name, _ in run["config"]["class_names"]] == ["cat", "dog", "owl"]
    # The preparation the converter recorded beside data.npz, in run.json for --predict.
    recorded = json.loads((tmp_path / "mydata" / "preparation.json").read_text())
    assert recorded["polarity"].startswith("light on dark")
    assert run["config"]["image_preparation"] == recorded
    assert (run["train_images"], run["validation_images"], run["test_images"]) == (76, 20, 24)


def own_folder(folder, **changes):
    arrays = synthetic.make_arrays(train=300, test=100, classes=4, seed=6)
    content = {"x_train": arrays["train_imgs"], "y_train": arrays["train_labels"],
               "x_test": arrays["test_imgs"], "y_test": arrays["test_labels"], **changes}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "data.npz", **{k: v for k, v in content.items() if v is not None})
    return folder


def test_own_data_takes_its_classes_from_the_labels(tmp_path, capsys):
    folder = own_folder(tmp_path / "own")
    result = mb.main(["--dataset", "own", "--data-dir", str(folder), "--output-dir",
                      str(tmp_path / "out"), "--epochs", "1", "--no-plot"])
    assert result["model"].layers[-1].units == 4
    assert "Own data: 4 classes (labels 0 to 3), 300 training and 100 test images." in \
        capsys.readouterr().out


WRONG_OWN_DATA = [
    ("no data.npz", None, "lacks data.npz"),
    ("missing x_test", {"x_test": None}, "has no array 'x_test'"),
    ("pickled labels", {"y_train": np.array([object()] * 300, dtype=object)},
     "holds Python objects"),
    ("images 32x32", {"x_train": np.zeros((300, 32, 32), np.uint8)},
     "images have shape (300, 32, 32), expected (N, 28, 28)"),
    ("float images", {"x_train": np.zeros((300, 28, 28), np.float32)},
     "images are float32, expected uint8"),
    ("float labels", {"y_train": np.zeros(300, np.float64)}, "labels are float64"),
    ("negative label", {"y_test": np.full(100, -1)}, "labels run from -1 to -1"),
    ("label gap", {"y_train": np.repeat([0, 1, 3], 100).astype(np.uint8),
                   "y_test": np.zeros(100, np.uint8)},
     "no training image has label 2: number the classes 0 to C-1 without gaps"),
    ("count mismatch", {"y_train": np.zeros(299, np.uint8)}, "holds 299 labels but"),
]


@pytest.mark.parametrize("case, changes, words", WRONG_OWN_DATA, ids=[c[0] for c in WRONG_OWN_DATA])
def test_wrong_own_data_folder_is_one_clear_line(case, changes, words, tmp_path, capsys):
    folder = tmp_path / "own"
    folder.mkdir()
    if changes is not None:
        own_folder(folder, **changes)
    code = cli(["--dataset", "own", "--data-dir", str(folder), "--dry-run",
                "--output-dir", str(tmp_path / "out")])
    assert code == 1
    line, = error_lines(capsys.readouterr().err)
    assert words in line and "see docs/data.md, 'Your own data'" in line


def test_class_names_file_must_name_every_class(tmp_path, capsys):
    folder = own_folder(tmp_path / "own")
    (folder / "class_names.txt").write_text("a\nb\nc\n")
    assert cli(["--dataset", "own", "--data-dir", str(folder), "--dry-run",
                "--output-dir", str(tmp_path / "out")]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert "names 3 classes but the labels have 4" in line


def test_an_unreadable_preparation_json_is_one_line(tmp_path, capsys):
    folder = own_folder(tmp_path / "own")
    (folder / "preparation.json").write_text('{"grayscale": ')  # cut short
    check_row(capsys, "`--dataset own` with a `preparation.json`",
              ["--dataset", "own", "--data-dir", folder, "--dry-run", "--output-dir",
               tmp_path / "out"], **{"mydata/preparation.json": folder / "preparation.json"})


def test_dark_on_light_own_data_without_a_record_gets_a_note(tmp_path, capsys):
    # 200 of 300 training images dark ink on a light page, data.npz not made by the
    # converter: --predict would make new images light on dark, unlike these.
    images = np.zeros((300, 28, 28), np.uint8)
    images[:, 8:20, 10:18] = 200
    images[:200] = 255 - images[:200]
    folder = own_folder(tmp_path / "own", x_train=images)
    assert cli(["--dataset", "own", "--data-dir", str(folder), "--dry-run",
                "--output-dir", str(tmp_path / "out")]) == 0
    assert ("Note: 200 of the 300 training images are dark on light, but --predict makes "
            "every image light on dark, as KMNIST and MNIST store theirs: make data.npz with "
            "tools/images_to_npz.py, or invert the images (255 - x) (see docs/data.md, "
            "'Your own data').") in capsys.readouterr().out.splitlines()
    light = own_folder(tmp_path / "light", x_train=255 - images)  # 100 of 300: no note
    assert cli(["--dataset", "own", "--data-dir", str(light), "--dry-run",
                "--output-dir", str(tmp_path / "out2")]) == 0
    assert "are dark on light" not in capsys.readouterr().out


def test_own_without_data_dir_is_a_usage_error(capsys):
    assert cli(["--dataset", "own"]) == 2
    line, = error_lines(capsys.readouterr().err)
    assert "--dataset own needs --data-dir" in line


def summaries(folder):
    """(step, summary value) of every summary in a TensorBoard run folder, read back with
    TensorFlow's own event parser."""
    for path in folder.glob("events.out.tfevents.*"):
        for record in tf.data.TFRecordDataset(str(path)):
            event = event_pb2.Event.FromString(record.numpy())
            for value in event.summary.value:
                yield event.step, value


def epoch_scalars(folder):
    """{tag: [steps]} of the summaries in a TensorBoard run folder."""
    tags = {}
    for step, value in summaries(folder):
        tags.setdefault(value.tag, []).append(step)
    return tags


def test_tensorboard_logs_hold_the_epoch_scalars_per_variant(keras_cache, tmp_path):
    mb.main(["--compare", "--epochs", "2", "--tensorboard", "--no-plot",
             "--output-dir", str(tmp_path)])
    for variant in ("batchnorm", "no_batchnorm"):
        train = epoch_scalars(tmp_path / "logs" / variant / "train")
        validation = epoch_scalars(tmp_path / "logs" / variant / "validation")
        assert train["epoch_loss"] == [0, 1] and train["epoch_accuracy"] == [0, 1]
        assert validation["epoch_loss"] == [0, 1]
    histograms = epoch_scalars(tmp_path / "logs" / "batchnorm" / "train")
    assert any("batch_normalization" in tag and "moving_variance" in tag for tag in histograms)


def summary_plugins(folder):
    """{tag: the TensorBoard plugin that shows it} of a run folder's summaries."""
    return {value.tag: value.metadata.plugin_data.plugin_name for _, value in summaries(folder)}


def test_tensorboard_alone_writes_train_and_validation_the_graph_and_bn_histograms(
        keras_cache, tmp_path):
    # docs/flags-and-outputs.md, logs/: train/ and validation/ (per-epoch loss and
    # accuracy, the graph, weight histograms, BatchNormalization's moving mean and
    # moving variance included).
    mb.main(["--epochs", "2", "--tensorboard", "--no-plot", "--verbose", "0",
             "--output-dir", str(tmp_path)])
    train = epoch_scalars(tmp_path / "logs" / "train")
    validation = epoch_scalars(tmp_path / "logs" / "validation")
    assert train["epoch_loss"] == [0, 1] and train["epoch_accuracy"] == [0, 1]
    assert validation["epoch_loss"] == [0, 1] and validation["epoch_accuracy"] == [0, 1]
    plugins = summary_plugins(tmp_path / "logs" / "train")
    # Keras 3 writes the model's graph as its config, under TensorBoard's Keras-graph plugin.
    assert plugins.get("keras") == "graph_keras_model"
    # Layer names carry Keras' per-process counter (batch_normalization_7, ...).
    parts = {}
    for tag, plugin in plugins.items():
        found = re.fullmatch(r"batchnorm_cnn/(batch_normalization(?:_\d+)?)/(\w+)/histogram",
                             tag)
        if found and plugin == "histograms":
            parts.setdefault(found[1], set()).add(found[2])
    # The lesson's five BatchNormalization layers, each with its four variables.
    assert list(parts.values()) == [{"gamma", "beta", "moving_mean", "moving_variance"}] * 5
    assert any(re.fullmatch(r"batchnorm_cnn/conv2d(_\d+)?/kernel/histogram", tag)
               for tag in plugins)


def test_tensorboard_without_its_package_is_one_line_before_anything_runs(
        monkeypatch, tmp_path, capsys):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None
                        if name == "tensorboard" else real_find_spec(name, *rest))
    assert cli(["--tensorboard", "--output-dir", str(tmp_path / "out")]) == 1
    assert error_lines(capsys.readouterr().err) == [
        "error: --tensorboard needs the tensorboard package, which writes and shows the "
        "logs: pip install tensorboard"]
    assert not (tmp_path / "out").exists()  # refused before the output folder was made


KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"  # Keras' own


def write_dataset(dataset, folder, arrays):
    """The files keras.datasets.<dataset> caches, in their real formats, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    if dataset == "mnist":
        np.savez(folder / "mnist.npz", x_train=arrays["train_imgs"], y_train=arrays["train_labels"],
                 x_test=arrays["test_imgs"], y_test=arrays["test_labels"])
        return
    for name, part in (("train-labels-idx1-ubyte.gz", "train_labels"),
                       ("train-images-idx3-ubyte.gz", "train_imgs"),
                       ("t10k-labels-idx1-ubyte.gz", "test_labels"),
                       ("t10k-images-idx3-ubyte.gz", "test_imgs")):
        write_idx(folder / name, arrays[part])


def assert_arrays(loaded, arrays):
    (x_train, y_train), (x_test, y_test) = loaded
    np.testing.assert_array_equal(x_train, arrays["train_imgs"])
    np.testing.assert_array_equal(y_train, arrays["train_labels"])
    np.testing.assert_array_equal(x_test, arrays["test_imgs"])
    np.testing.assert_array_equal(y_test, arrays["test_labels"])


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_data_dir_reads_the_folders_files_for_mnist_and_fashion_mnist(dataset, tmp_path):
    arrays = synthetic.make_arrays(train=60, test=20, seed=7)
    write_dataset(dataset, tmp_path, arrays)
    assert_arrays(mb.load_data(dataset, tmp_path), arrays)  # Keras' cache is not read


@pytest.fixture
def local_server(tmp_path, monkeypatch):
    """A folder served over HTTP on 127.0.0.1, standing in for Keras' download site: a
    request to KERAS_ORIGIN goes there instead. Yields (folder, paths requested)."""
    import functools
    import http.server
    import threading
    import urllib.request
    folder, requested = tmp_path / "served", []
    folder.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requested.append(self.path)

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    local = f"http://127.0.0.1:{server.server_port}/"
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *args, **kwargs: direct.open(
        url.replace(KERAS_ORIGIN, local) if isinstance(url, str) else url, *args, **kwargs))
    yield folder, requested
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_redownload_fetches_the_files_again(dataset, local_server, monkeypatch):
    served_folder, requested = local_server
    cached = synthetic.make_arrays(train=60, test=20, seed=8)
    served = synthetic.make_arrays(train=60, test=20, seed=9)
    cache = KERAS_HOME / "datasets" / ("fashion-mnist" if dataset == "fashion_mnist" else "")
    write_dataset(dataset, cache, cached)
    write_dataset(dataset, served_folder, served)
    if dataset == "mnist":  # the served file is the one with the right hash
        monkeypatch.setenv("MODEL_BATCHNORM_TEST_MNIST_SHA256", hashlib.sha256(
            (served_folder / "mnist.npz").read_bytes()).hexdigest())
    try:
        assert_arrays(mb.load_data(dataset, None, True), served)
        assert sorted(requested) == sorted(
            f"/{path.name}" for path in served_folder.iterdir())  # each file fetched once
        for path in served_folder.iterdir():
            assert (cache / path.name).read_bytes() == path.read_bytes()
    finally:
        for path in served_folder.iterdir():
            (cache / path.name).unlink(missing_ok=True)


def test_fashion_mnist_offline_is_one_line_naming_the_files(tmp_path, capsys):
    cache = KERAS_HOME / "datasets" / "fashion-mnist"
    for path in cache.glob("*"):
        path.unlink()
    assert cli(["--dataset", "fashion_mnist", "--dry-run", "--output-dir", str(tmp_path)]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert line.startswith("error: could not download fashion_mnist") and "Offline?" in line
    for name in ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz",
                 "t10k-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"):
        assert str(cache / name) in line
    assert "--data-dir FOLDER" in line
