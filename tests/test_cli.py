"""The script end to end, in-process and as a user runs it, and its answers to bad input."""
import json
import re

import keras
import numpy as np
import pytest
from matplotlib.image import imread

import model_batchnorm as mb
from conftest import cli, error_lines, run_script, settings_for

TEST_LINE = re.compile(r"^Test loss: (\S+) / Test accuracy: (\S+)$", re.M)
OUTPUT_FILES = ("history.json", "training_history.png", "model.keras", "run.json")
HISTORY_KEYS = {"accuracy", "loss", "val_accuracy", "val_loss"}


@pytest.fixture(scope="module")
def short_run(tmp_path_factory):
    """One short in-process run on synthetic data, shared by the checks below."""
    from conftest import kmnist_in_cache
    out = tmp_path_factory.mktemp("short-run")
    with kmnist_in_cache():
        result = mb.main(["--epochs", "2", "--output-dir", str(out), "--seed", "3"])
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
    # Piped output gets verbose 2: one line per epoch, no progress bar; and TensorFlow's
    # start-up chatter is filtered.
    assert "Epoch 2/2" in done.stdout and "\r" not in done.stdout and "━" not in done.stdout
    assert len(re.findall(r"^2/2 - \d+s - .*- loss: ", done.stdout, re.M)) == 2  # 400/250
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
    assert sorted(tmp_path.rglob("*.png")) == []  # --no-plot: no picture at all


def test_help_documents_every_flag():
    """Every flag the parser accepts and every flag docs/flags-and-outputs.md's table
    documents is in --help's output, each as an option that begins a line of it."""
    from conftest import ROOT
    from machinery import cli as flags
    done = run_script("--help")
    assert done.returncode == 0
    shown = set(re.findall(r"^\s+(?:-[a-z], )?(--[a-z0-9-]+)", done.stdout, re.M))
    parser = flags.build_parser(mb.flag_defaults)
    accepted = {option for action in parser._actions for option in action.option_strings
                if option.startswith("--")}
    table = (ROOT / "docs" / "flags-and-outputs.md").read_text().split("## Output files")[0]
    documented = set(re.findall(r"^\| `(--[a-z0-9-]+)", table, re.M))
    assert len(documented) >= 23  # a floor: a table cut short fails here
    assert accepted - shown == set() and documented - shown == set()
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
    (["--dataset", "cifar10"], "--dataset"),
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
    assert cli(["--limit", "2", "--validation-split", "0.9", "--output-dir", str(tmp_path)]) == 1
    # int(2 * (1 - 0.9)) = 0 images left to train on (tests/test_readme_errors.py checks
    # the README's own example, --limit 1).
    assert error_lines(capsys.readouterr().err) == [
        "error: 2 training image(s) with --validation-split 0.9 leave 0 for training and 2 for "
        "validation: use more images (--limit) or another split"]


def test_dry_run_checks_everything_and_trains_nothing(capsys, keras_cache, tmp_path):
    assert cli(["--dry-run", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "433,034" in out and "nothing was trained" in out
    assert list(tmp_path.iterdir()) == []


def test_no_plot_writes_no_picture_even_with_compare(keras_cache, tmp_path):
    mb.main(["--compare", "--no-plot", "--epochs", "1", "--limit", "300",
             "--output-dir", str(tmp_path)])
    assert (tmp_path / "comparison.json").exists()  # the comparison did run
    for variant in ("batchnorm", "no_batchnorm"):
        assert (tmp_path / variant / "history.json").exists()
    assert sorted(tmp_path.rglob("*.png")) == []


def k49_in_the_keras_cache():
    """Synthetic K49 under the names extra-keras-datasets gives K49's files in the cache."""
    from conftest import KERAS_HOME
    from testdata import synthetic
    arrays = synthetic.make_arrays(train=400, test=120, classes=49)
    names = {"train_imgs": "kmnist.npz_k49_train_imgs",
             "train_labels": "kmnist.npz_k49_train_labels",
             "test_imgs": "kmnist.npz_k49_test_imgs", "test_labels": "kmnist.npz_k49_test_labels"}
    paths = {part: KERAS_HOME / "datasets" / name for part, name in names.items()}
    synthetic.write(paths, arrays)
    return arrays, paths


def test_k49_through_the_keras_cache_with_its_pictures(empty_cache, tmp_path, monkeypatch):
    import plot_history
    arrays, paths = k49_in_the_keras_cache()
    figures = {}

    def keep(name, draw):
        def drawn(*args, **kwargs):
            figures[name] = draw(*args, **kwargs)
            return figures[name]
        monkeypatch.setattr(plot_history, name, drawn)

    keep("plot_confusion_matrix", plot_history.plot_confusion_matrix)
    keep("plot_predictions", plot_history.plot_predictions)
    try:
        result = mb.main(["--dataset", "k49", "--epochs", "1", "--output-dir", str(tmp_path)])
    finally:
        for path in paths.values():
            path.unlink()
    assert result["model"].layers[-1].units == 49
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["dataset"] == "k49" and run["config"]["data_dir"] is None
    assert run["test_images"] == 120
    for name in ("training_history.png", "predictions.png", "confusion_matrix.png"):
        assert imread(tmp_path / name).ndim == 3, name  # written, and a real PNG
    ax = figures["plot_confusion_matrix"].axes[0]
    counts = ax.images[0].get_array()
    assert counts.shape == (49, 49) and counts.sum() == 120
    assert [t.get_text() for t in ax.get_xticklabels()] == [str(i) for i in range(49)]
    # counts[i, j]: test images of class i predicted as j, counted here independently.
    predicted = result["model"].predict(mb.preprocess(arrays["test_imgs"]), verbose=0).argmax(1)
    expected = np.zeros((49, 49), int)
    for true, guess in zip(arrays["test_labels"].tolist(), predicted.tolist()):
        expected[true, guess] += 1
    np.testing.assert_array_equal(np.asarray(counts), expected)
    titled = [ax.get_title() for ax in figures["plot_predictions"].axes if ax.get_title()]
    true_classes = [title.split(" → ")[0] for title in titled]
    assert true_classes == [str(label) for label in arrays["test_labels"][:32]]


def test_verbose_is_1_on_a_terminal(data_dir, tmp_path):
    """Under a pseudo-terminal the run shows Keras' progress bar (verbose 1)."""
    import os
    import pty
    import subprocess
    import sys
    from conftest import ROOT
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), "--epochs", "1", "--limit", "300",
         "--no-plot", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "out")],
        stdin=terminal, stdout=terminal, stderr=subprocess.DEVNULL, cwd=ROOT)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal closed: the run has ended
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert process.wait(timeout=240) == 0, shown
    text = shown.decode()
    assert "━" in text, text  # the progress bar: verbose 1
    assert "Test loss: " in text
    # Verbose 2's one line per epoch ("8/8 - 2s - 250ms/step - ...") is not shown.
    assert not re.search(r"^\d+/\d+ - \d+s - ", text, re.M), text


def count_train_calls(fast, images, batch_size):
    """How many times fit hands control back to Python (on_train_batch_end) in one epoch."""
    from testdata import synthetic

    class Calls(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    arrays = synthetic.make_arrays(train=images, test=10)
    x, y = arrays["train_imgs"], arrays["train_labels"]
    run = settings_for(["--epochs", 1, "--batch-size", batch_size, "--verbose", 0,
                        *(["--fast"] if fast else [])], ((x, y), (x, y)))
    model = mb.make_model(run)
    calls = Calls()
    mb.train(model, x, y, run, [calls])
    return model, calls.batches


def test_fast_runs_16_steps_per_call():
    # 400 images, the last 20% held out: 320 in batches of 10, 32 steps. The README's
    # 16 steps per call make two calls, after steps 16 and 32.
    model, batches = count_train_calls(True, 400, 10)
    assert model.steps_per_execution == 16
    assert batches == [15, 31]
    model, batches = count_train_calls(False, 400, 10)  # the lesson: one step per call
    assert model.steps_per_execution == 1 and batches == list(range(32))
