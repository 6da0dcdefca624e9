"""Loading KMNIST: through extra-keras-datasets and the Keras cache, or from --data-dir;
and what the user sees when the data is missing, damaged or not KMNIST."""
import zipfile
from pathlib import Path

import numpy as np
import pytest

import model_batchnorm as mb
from conftest import KERAS_HOME, cli, error_lines
from machinery import data
from testdata import synthetic


def test_load_data_reads_the_keras_cache_through_extra_keras_datasets(keras_cache):
    expected = synthetic.make_arrays(train=600, test=200)
    (x_train, y_train), (x_test, y_test) = mb.load_data()
    np.testing.assert_array_equal(x_train, expected["train_imgs"])
    np.testing.assert_array_equal(y_test, expected["test_labels"])
    assert x_train.dtype == np.uint8 and x_train.shape == (600, 28, 28)
    assert y_train.shape == (600,) and x_test.shape == (200, 28, 28)


# The names the README gives (and extra-keras-datasets uses: f"{path}_{type}_train_imgs"
# with path "kmnist.npz"), and the official files' names on http://codh.rois.ac.jp/kmnist/.
CACHE_NAMES = {"kmnist": ["kmnist.npz_kmnist_train_imgs", "kmnist.npz_kmnist_train_labels",
                          "kmnist.npz_kmnist_test_imgs", "kmnist.npz_kmnist_test_labels"],
               "k49": ["kmnist.npz_k49_train_imgs", "kmnist.npz_k49_train_labels",
                       "kmnist.npz_k49_test_imgs", "kmnist.npz_k49_test_labels"]}
SITE_NAMES = {"kmnist": ["kmnist-train-imgs.npz", "kmnist-train-labels.npz",
                         "kmnist-test-imgs.npz", "kmnist-test-labels.npz"],
              "k49": ["k49-train-imgs.npz", "k49-train-labels.npz",
                      "k49-test-imgs.npz", "k49-test-labels.npz"]}


def write_by_hand(folder, names, classes):
    """Synthetic arrays saved as the site stores them (arr_0) under the given names, in the
    order train images, train labels, test images, test labels."""
    arrays = synthetic.make_arrays(train=300, test=100, classes=classes)
    order = ("train_imgs", "train_labels", "test_imgs", "test_labels")
    for name, part in zip(names, order):
        with open(folder / name, "wb") as f:
            np.savez_compressed(f, arrays[part])
    return [arrays[part] for part in order]


def assert_loaded(loaded, expected):
    (x_train, y_train), (x_test, y_test) = loaded
    for got, want in zip((x_train, y_train, x_test, y_test), expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dataset, classes", [("kmnist", 10), ("k49", 49)])
def test_cache_names_are_the_ones_the_readme_gives(dataset, classes, empty_cache):
    folder = KERAS_HOME / "datasets"
    folder.mkdir(exist_ok=True)
    try:
        expected = write_by_hand(folder, CACHE_NAMES[dataset], classes)
        assert_loaded(mb.load_data(dataset), expected)
        assert sorted(p.name for p in data.cache_files(dataset).values()) == sorted(
            CACHE_NAMES[dataset])  # what --redownload deletes and the checks read
    finally:
        for name in CACHE_NAMES[dataset]:
            (folder / name).unlink(missing_ok=True)


def test_load_data_reads_official_files_from_data_dir(data_dir, empty_cache):
    (x_train, y_train), (x_test, y_test) = mb.load_data(data_dir=data_dir)
    assert x_train.shape == (600, 28, 28) and x_test.shape == (200, 28, 28)
    assert y_train.dtype.kind in "iu"
    assert not any(path.exists() for path in empty_cache.values())  # nothing downloaded


def test_load_data_reads_k49_under_its_own_names(tmp_path):
    folder = tmp_path / "k49"
    synthetic.write(synthetic.folder_paths(folder, "k49"),
                    synthetic.make_arrays(train=300, test=100, classes=49))
    (x_train, y_train), _ = mb.load_data("k49", data_dir=folder)
    assert x_train.shape == (300, 28, 28) and y_train.max() <= 48


def load_error(capsys, *argv):
    code = cli(["--dry-run", "--output-dir", str(Path(KERAS_HOME) / "out"), *map(str, argv)])
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1, lines
    return code, lines[0]


def test_missing_data_dir_names_the_folder(capsys, tmp_path):
    code, line = load_error(capsys, "--data-dir", tmp_path / "nowhere")
    assert code == 1 and "nowhere is not a folder" in line


def test_data_dir_lacking_a_file_names_it(capsys, data_dir):
    (data_dir / "kmnist-test-labels.npz").unlink()
    code, line = load_error(capsys, "--data-dir", data_dir)
    assert code == 1 and "lacks kmnist-test-labels.npz" in line and "codh.rois.ac.jp" in line


class Unpickled:
    """Unpickling this would create the marker file: it must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_raw(path, data):
    Path(path).write_bytes(data)


def damage(case, paths, tmp_path, subset="train"):
    """Spoil one file of a set (of the training or the test pair) as `case` says;
    returns (file, words the error must contain)."""
    count = {"train": 600, "test": 200}[subset]  # the fixtures' sizes
    images, labels = paths[f"{subset}_imgs"], paths[f"{subset}_labels"]
    if case == "truncated file":
        write_raw(images, images.read_bytes()[:500])
        return images, "truncated"
    if case == "not a zip":
        write_raw(images, b"<html>503 Service Unavailable</html>")
        return images, "not an .npz"
    if case == "wrong shape":
        synthetic.save_npz(images, np.zeros((count, 32, 32), np.uint8))
        return images, f"images have shape ({count}, 32, 32), expected (N, 28, 28)"
    if case == "wrong dtype":
        synthetic.save_npz(images, np.zeros((count, 28, 28), np.float64))
        return images, "images are float64, expected uint8"
    if case == "float labels":  # whole numbers, but stored as floats
        synthetic.save_npz(labels, np.zeros(count, np.float64))
        return labels, "labels are float64, expected integers"
    if case == "2-D labels":
        synthetic.save_npz(labels, np.zeros((count, 1), np.uint8))
        return labels, f"labels have shape ({count}, 1), expected (N,)"
    if case == "label out of range":
        synthetic.save_npz(labels, np.full(count, 10, np.uint8))
        return labels, "labels run from 10 to 10, expected 0 to 9"
    if case == "count mismatch":
        synthetic.save_npz(labels, np.zeros(count - 1, np.uint8))
        return labels, f"holds {count - 1} labels but {images} holds {count} images"
    if case == "pickled objects":
        array = np.array([Unpickled(tmp_path / "was-unpickled")], dtype=object)
        with open(images, "wb") as f:
            np.savez(f, array)
        return images, "holds Python objects"
    if case == "missing key arr_0":
        with open(images, "wb") as f:
            np.savez(f, images=np.zeros((count, 28, 28), np.uint8))
        return images, "has no array 'arr_0'"
    raise AssertionError(case)


MALFORMED = ["truncated file", "not a zip", "wrong shape", "wrong dtype", "float labels",
             "2-D labels", "label out of range", "count mismatch", "pickled objects",
             "missing key arr_0"]


@pytest.mark.parametrize("subset", ["train", "test"])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_data_dir_file_is_named_in_one_line(case, subset, capsys, data_dir, tmp_path):
    bad, words = damage(case, synthetic.folder_paths(data_dir), tmp_path, subset)
    code, line = load_error(capsys, "--data-dir", data_dir)
    assert code == 1
    assert str(bad) in line and words in line
    assert not (tmp_path / "was-unpickled").exists()


@pytest.mark.parametrize("subset", ["train", "test"])
@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_cached_file_is_named_in_one_line(case, subset, capsys, keras_cache, tmp_path):
    bad, words = damage(case, keras_cache, tmp_path, subset)
    code, line = load_error(capsys)
    assert code == 1
    assert str(bad) in line and words in line
    assert not (tmp_path / "was-unpickled").exists()


def test_damaged_cache_suggests_redownload(capsys, keras_cache, tmp_path):
    damage("truncated file", keras_cache, tmp_path)
    _, line = load_error(capsys)
    assert "--redownload" in line


def test_failed_download_explains_the_offline_options(capsys, empty_cache):
    code, line = load_error(capsys)
    assert code == 1
    assert "could not download KMNIST" in line
    assert "--data-dir" in line and "kmnist.npz_kmnist_train_imgs" in line


def test_redownload_deletes_the_cached_files_then_fetches(capsys, keras_cache, tmp_path):
    damage("truncated file", keras_cache, tmp_path)
    code, line = load_error(capsys, "--redownload")
    # The fetch fails here (no network), but only after the damaged files were removed.
    assert code == 1 and "could not download" in line
    assert not any(path.exists() for path in keras_cache.values())


def test_subset_counts_are_reported_not_refused(capsys, keras_cache, tmp_path):
    assert cli(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Note: loaded 600 training and 200 test images" in out
    assert "60,000 and 10,000" in out


def test_check_npz_reads_headers_only_for_valid_files(keras_cache, monkeypatch):
    """A valid file passes having read its header alone: the 600 training images are
    600 * 28 * 28 = 470,400 bytes, a .npy header at most a few hundred (NumPy pads it
    to a multiple of 64 bytes), and no array is ever loaded."""
    read = []
    original_read = zipfile.ZipExtFile.read

    def counted_read(self, n=-1):
        chunk = original_read(self, n)
        read.append(len(chunk))
        return chunk

    def no_loading(*args, **kwargs):
        raise AssertionError("check_npz loaded an array")

    monkeypatch.setattr(zipfile.ZipExtFile, "read", counted_read)
    monkeypatch.setattr(np, "load", no_loading)
    monkeypatch.setattr(np.lib.format, "read_array", no_loading)
    data.check_npz(keras_cache["train_imgs"], advice="unused")  # raises on anything wrong
    assert 0 < sum(read) <= 1024, read


@pytest.mark.parametrize("dataset, classes", [("kmnist", 10), ("k49", 49)])
def test_data_dir_names_are_the_dataset_sites_names(dataset, classes, tmp_path, empty_cache):
    expected = write_by_hand(tmp_path, SITE_NAMES[dataset], classes)
    assert_loaded(mb.load_data(dataset, data_dir=tmp_path), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SITE_NAMES[dataset])
