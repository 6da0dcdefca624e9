"""The rows of docs/troubleshooting.md's table that tests/test_readme_errors.py does not
reach: each fault is made here and its line compared with the row, as there."""
import gzip

import numpy as np
import pytest

from conftest import KERAS_HOME, cli, error_lines
from machinery import distribute, keras_datasets, own_data
from machinery.errors import ScriptError
from testdata import synthetic
from test_readme_errors import assert_whole_line, check_row, readme_fixes, readme_row


def raised_line(call, *args):
    with pytest.raises(ScriptError) as raised:
        call(*args)
    return f"error: {raised.value}", raised.value.code


def check_raised(row, line_and_code, message=0, **substitutions):
    messages, exit_code = readme_row(row)
    line, code = line_and_code
    assert code == exit_code
    assert_whole_line(messages[message], line, **substitutions)


def crc_damaged(path):
    """The npz still opens and its header reads, but its data fails the zip's CRC check."""
    content = bytearray(path.read_bytes())
    data_end = content.rfind(b"PK\x01\x02")  # the central directory follows the data
    content[data_end - 10] ^= 0xFF
    path.write_bytes(bytes(content))


def test_bn_momentum_outside_0_to_1(capsys, tmp_path):
    check_row(capsys, "`--bn-momentum 1`", ["--bn-momentum", "1", "--output-dir", tmp_path])


def test_tensorboard_without_its_package(monkeypatch, capsys, tmp_path):
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *rest: None
                        if name == "tensorboard" else real_find_spec(name, *rest))
    check_row(capsys, "`--tensorboard` without", ["--tensorboard", "--output-dir", tmp_path])


def test_dataset_own_without_data_dir(capsys, tmp_path):
    check_row(capsys, "`--dataset own` without", ["--dataset", "own", "--output-dir", tmp_path])


@pytest.mark.parametrize("message, arrays", [
    (0, dict(train_imgs=np.zeros((0, 28, 28), np.uint8),
             train_labels=np.zeros(0, np.uint8))),
    (1, dict(train_labels=np.zeros(600, np.float32))),
    (2, dict(train_labels=np.zeros((600, 2), np.uint8)))],
    ids=["no images", "float labels", "labels of two columns"])
def test_no_images_or_labels_not_whole_numbers_one_per_image(message, arrays, capsys,
                                                             tmp_path):
    folder = tmp_path / "data"
    paths = synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(600, 100))
    for part, array in arrays.items():
        synthetic.save_npz(paths[part], array)
    messages, exit_code = readme_row("no images, or labels")
    assert cli([str(a) for a in ["--data-dir", folder, "--dry-run", "--output-dir",
                                 tmp_path / "out"]]) == exit_code
    line, = error_lines(capsys.readouterr().err)
    file = paths["train_imgs" if message == 0 else "train_labels"]
    assert_whole_line(messages[message], line, **{"<file>": file})


def test_a_cached_file_whose_data_is_damaged(capsys, tmp_path):
    paths = synthetic.write(synthetic.cache_paths(KERAS_HOME), synthetic.make_arrays(600, 100))
    try:
        crc_damaged(paths["train_imgs"])
        check_row(capsys, "a cached file whose data is damaged",
                  ["--dry-run", "--output-dir", tmp_path / "out"],
                  **{"~/.keras/datasets": paths["train_imgs"].parent,
                     "<fix>": readme_fixes()["cache"]})
    finally:
        for path in paths.values():
            path.unlink(missing_ok=True)


def test_a_file_in_data_dir_whose_data_is_damaged(capsys, tmp_path):
    paths = synthetic.write(synthetic.folder_paths(tmp_path / "data"),
                            synthetic.make_arrays(600, 100))
    crc_damaged(paths["train_imgs"])
    check_row(capsys, "a file in `--data-dir` whose data is damaged",
              ["--data-dir", tmp_path / "data", "--dry-run", "--output-dir", tmp_path / "out"],
              **{"<file>": paths["train_imgs"], "<fix>": readme_fixes()["data_dir"]})


def test_mnist_data_dir_lacking_a_file(capsys, tmp_path):
    check_row(capsys, "`--dataset mnist` or `fashion_mnist` with a `--data-dir`",
              ["--dataset", "mnist", "--data-dir", tmp_path, "--dry-run", "--output-dir",
               tmp_path / "out"], **{"/data/mnist": tmp_path})


def test_mnist_with_no_network_and_no_cached_files(capsys, tmp_path):
    (KERAS_HOME / "datasets" / "mnist.npz").unlink(missing_ok=True)
    check_row(capsys, "`--dataset mnist` or `fashion_mnist` with no network",
              ["--dataset", "mnist", "--dry-run", "--output-dir", tmp_path / "out"],
              **{"~/.keras/datasets": KERAS_HOME / "datasets"})


@pytest.mark.parametrize("message, content", [(0, b"<html>"), (1, b"\0\0\x08\x01\0\0\0\x05abc")],
                         ids=["not gzip", "not an IDX file"])
def test_a_fashion_mnist_file_that_is_damaged(message, content, tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    if message == 0:
        path.write_bytes(content)
    else:
        with gzip.open(path, "wb") as f:
            f.write(content)
    check_raised("a Fashion-MNIST `.gz` file",
                 raised_line(keras_datasets.read_idx, path, 2049, "advice"), message,
                 **{"<file>": path})


def own(tmp_path, **changes):
    arrays = synthetic.make_arrays(train=300, test=100, classes=4, seed=6)
    content = {"x_train": arrays["train_imgs"], "y_train": arrays["train_labels"],
               "x_test": arrays["test_imgs"], "y_test": arrays["test_labels"], **changes}
    folder = tmp_path / "mine"
    folder.mkdir()
    np.savez(folder / "data.npz", **content)
    return folder


def own_row(capsys, row, folder, tmp_path):
    check_row(capsys, row, ["--dataset", "own", "--data-dir", folder, "--dry-run",
                            "--output-dir", tmp_path / "out"], **{"/data/mine": folder})


def test_own_data_dir_lacking_data_npz(capsys, tmp_path):
    (tmp_path / "mine").mkdir()
    own_row(capsys, "`--dataset own` with a `--data-dir` lacking", tmp_path / "mine", tmp_path)


def test_own_data_with_a_gap_in_its_labels(capsys, tmp_path):
    labels = np.resize(np.array([0, 1, 3], np.uint8), 300)
    own_row(capsys, "`--dataset own` with a gap", own(tmp_path, y_train=labels), tmp_path)


def test_own_class_names_not_utf8(capsys, tmp_path):
    folder = own(tmp_path)
    (folder / "class_names.txt").write_bytes(b"\xff\xfe\xfa\n")
    own_row(capsys, "`--dataset own` with a `class_names.txt` that is not", folder, tmp_path)


def test_own_class_names_of_another_length(capsys, tmp_path):
    folder = own(tmp_path)
    (folder / "class_names.txt").write_text("a\nb\nc\n")
    own_row(capsys, "`--dataset own` with a `class_names.txt` of another", folder, tmp_path)


def slurm_step(monkeypatch, **variables):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    monkeypatch.delenv("SLURM_STEP_TASKS_PER_NODE", raising=False)
    for name, value in {"SLURM_JOB_ID": "42", "SLURM_PROCID": "0", **variables}.items():
        monkeypatch.setenv(name, value)


def test_a_slurm_job_step_that_lacks_its_variables(monkeypatch):
    slurm_step(monkeypatch)
    check_raised("a Slurm job step that lacks its variables",
                 raised_line(distribute.cluster_resolver, 8888))


def test_a_slurm_job_with_gpus_and_several_tasks_per_node(monkeypatch):
    slurm_step(monkeypatch, SLURM_STEP_TASKS_PER_NODE="2")
    real = distribute.tf.config.list_physical_devices
    monkeypatch.setattr(distribute.tf.config, "list_physical_devices",
                        lambda kind=None: ["GPU:0"] if kind == "GPU" else real(kind))
    check_raised("a Slurm job with GPUs",
                 raised_line(distribute.cluster_resolver, 8888))


def test_multiworker_without_tf_config_outside_slurm(monkeypatch):
    for name in ("TF_CONFIG", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    check_raised("`--distribute multiworker` without `TF_CONFIG`",
                 raised_line(distribute.cluster_resolver, 8888))


def test_a_tf_config_that_is_not_json(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "")
    check_raised("a `TF_CONFIG` that is not JSON", raised_line(distribute.cluster_resolver, 8888))


def test_a_finished_run_with_pictures_is_named_as_the_example_says(capsys, data_dir, tmp_path):
    messages, _ = readme_row("an output folder with a finished run")
    example = messages[1]  # the files of a run that drew its pictures
    argv = ["--epochs", "1", "--limit", "300", "--batch-size", "100", "--verbose", "2",
            "--data-dir", data_dir, "--output-dir", tmp_path / "outputs"]
    assert cli([str(a) for a in argv]) == 0
    capsys.readouterr()
    assert cli([str(a) for a in argv]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert f"({example}; finished " in line
