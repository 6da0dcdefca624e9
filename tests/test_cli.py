"""The script end to end, in-process and as a user runs it, and its answers to bad input."""
import json
import re

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, error_lines, run_script

TEST_LINE = re.compile(r"^Test loss: (\S+) / Test accuracy: (\S+)$", re.M)
OUTPUT_FILES = ("history.json", "training_history.png", "model.keras", "run.json")
HISTORY_KEYS = {"accuracy", "loss", "val_accuracy", "val_loss"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One short in-process run on synthetic data, shared by the checks below."""
    from machinery import synthetic
    from conftest import KERAS_HOME
    paths = synthetic.write(synthetic.cache_paths(KERAS_HOME), synthetic.make_arrays(600, 200))
    out = tmp_path_factory.mktemp("short-run")
    result = mb.main(["--epochs", "2", "--output-dir", str(out), "--seed", "3"])
    for path in paths.values():
        path.unlink()
    return out, result


def test_short_run_writes_the_output_files(short_run):
    out, result = short_run
    for name in OUTPUT_FILES + ("predictions.png", "confusion_matrix.png", "history.csv"):
        assert (out / name).stat().st_size > 0, name
    assert not (out / "backup").exists()  # a finished run removes its backup


def test_history_json_holds_one_value_per_epoch(short_run):
    out, result = short_run
    history = json.loads((out / "history.json").read_text())
    assert set(history) == HISTORY_KEYS
    assert all(len(values) == 2 for values in history.values())
    assert history == result["history"]


def test_run_json_records_configuration_results_and_versions(short_run):
    out, result = short_run
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["batch_size"] == 250 and run["config"]["epochs"] == 2
    assert run["config"]["validation_split"] == 0.2
    assert run["epochs_completed"] == 2
    assert (run["train_images"], run["validation_images"], run["test_images"]) == (480, 120, 200)
    assert run["test_loss"] == result["test_loss"]
    assert 0 <= run["test_accuracy"] <= 1 and 0 <= run["test_balanced_accuracy"] <= 1
    assert run["training_seconds"] > 0 and run["training_images_per_second"] > 0
    assert set(run["versions"]) == {"python", "tensorflow", "keras", "numpy"}
    assert run["versions"]["keras"].startswith("3.")


def test_short_run_learns_the_training_set(short_run):
    # What two epochs guarantee: training accuracy rises and training loss falls.
    # Validation accuracy is not asserted: BatchNormalization's moving statistics
    # lag the weights, so it can sit near chance this early.
    history = short_run[1]["history"]
    assert history["loss"][-1] < history["loss"][0]
    assert history["accuracy"][-1] > 0.5


def test_saved_model_reloads_and_predicts_like_the_trained_one(short_run):
    out, result = short_run
    images = mb.preprocess(np.random.default_rng(0).integers(0, 255, (8, 28, 28), np.uint8))
    reloaded = keras.models.load_model(out / "model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0),
                               result["model"].predict(images, verbose=0), atol=1e-6)


def test_script_prints_the_test_line_and_writes_the_files(keras_cache, tmp_path):
    out = tmp_path / "x"
    done = run_script("--epochs", "2", "--limit", "500", "--output-dir", out, "--seed", "1")
    assert done.returncode == 0, done.stderr
    match = TEST_LINE.search(done.stdout)
    assert match, done.stdout
    run = json.loads((out / "run.json").read_text())
    assert float(match.group(1)) == run["test_loss"]
    assert float(match.group(2)) == run["test_accuracy"]
    for name in OUTPUT_FILES:
        assert (out / name).exists(), name
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [2, 2, 2, 2]
    # Piped output gets one line per epoch, and TensorFlow's start-up chatter is filtered.
    assert "Epoch 2/2" in done.stdout and "\r" not in done.stdout
    assert_no_startup_noise(done.stderr)


STARTUP_NOISE = ("oneDNN", "cuda drivers", "cpu_feature_guard", "cuInit", "input_shape",
                 "Traceback", "Warning", "NodeDef")


def assert_no_startup_noise(stderr):
    for noise in STARTUP_NOISE:
        assert noise not in stderr, stderr


def test_dry_run_from_the_command_line_has_a_quiet_stderr(keras_cache, tmp_path):
    # No training here, so fit()'s own filter cannot hide what start-up prints.
    done = run_script("--dry-run", "--output-dir", tmp_path)
    assert done.returncode == 0, done.stderr
    assert_no_startup_noise(done.stderr)


def test_limit_takes_the_first_images(keras_cache, tmp_path):
    result = mb.main(["--epochs", "1", "--limit", "300", "--output-dir", str(tmp_path),
                      "--no-plot"])
    assert (result["train_images"], result["validation_images"]) == (240, 60)
    assert result["test_images"] == 200  # fewer than the limit: all of them
    assert not (tmp_path / "training_history.png").exists()


def test_help_documents_every_flag():
    done = run_script("--help")
    assert done.returncode == 0
    for flag in ("--epochs", "--batch-size", "--validation-split", "--limit", "--data-dir",
                 "--output-dir", "--seed", "--no-plot", "--verbose", "--dataset", "--restart",
                 "--redownload", "--no-batchnorm", "--compare", "--dry-run"):
        assert flag in done.stdout
    assert "default: 250" in done.stdout and "default: 25)" in done.stdout


BAD_ARGUMENTS = [
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "two"], "--epochs"),
    (["--epochs", "2.5"], "--epochs"),
    (["--batch-size", "-1"], "--batch-size"),
    (["--limit", "0"], "--limit"),
    (["--validation-split", "0"], "--validation-split"),
    (["--validation-split", "1"], "--validation-split"),
    (["--validation-split", "1.5"], "--validation-split"),
    (["--validation-split", "abc"], "--validation-split"),
    (["--verbose", "3"], "--verbose"),
    (["--dataset", "mnist"], "--dataset"),
]


@pytest.mark.parametrize("argv, flag", BAD_ARGUMENTS)
def test_bad_argument_is_one_line_with_exit_code_2(argv, flag, capsys):
    assert cli(argv) == 2
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and flag in lines[0] and "--help" in lines[0]


def test_bad_argument_from_the_command_line_exits_2_without_usage_text():
    done = run_script("--epochs", "0")
    assert done.returncode == 2
    assert error_lines(done.stderr) == [line for line in done.stderr.splitlines() if line]
    assert "usage:" not in done.stderr


def test_unwritable_output_folder_is_refused_before_loading_data(capsys, empty_cache, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    # The cache is empty: had it loaded data first, the error would be about downloading.
    assert cli(["--output-dir", str(blocker / "out")]) == 1
    lines = error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "cannot write to the output folder" in lines[0]
    assert "--output-dir" in lines[0]
    assert blocker.read_text() == "not a folder"


def test_too_few_images_for_the_split_is_refused(capsys, keras_cache, tmp_path):
    assert cli(["--limit", "1", "--output-dir", str(tmp_path)]) == 1
    assert "--validation-split" in error_lines(capsys.readouterr().err)[0]


def test_dry_run_checks_everything_and_trains_nothing(capsys, keras_cache, tmp_path):
    assert cli(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "433,034" in out and "nothing was trained" in out
    assert list(tmp_path.iterdir()) == []
