"""--track-layer-inputs (docs/layer-inputs-and-learning-rates.md): the percentiles of a
layer's inputs on a probe batch, recorded during training without disturbing it."""
import contextlib
import io
import json

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, run_script
from machinery import layer_inputs
from testdata import synthetic


def train(out, data, *flags):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        mb.main(["--data-dir", str(data), "--limit", "500", "--epochs", "2", "--batch-size",
                 "50", "--seed", "3", "--no-plot", "--output-dir", str(out), *flags])
    return printed.getvalue()


@pytest.fixture(scope="module")
def data(module_data_dir):
    return module_data_dir


@pytest.fixture(scope="module")
def tracked(data, tmp_path_factory):
    """A seeded run with the tracker on (default layer, no cost limit, so that every
    point is taken on a busy machine too), and the same run without it."""
    out = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(layer_inputs, "BUDGET", 1e9)
        train(out / "on", data, "--track-layer-inputs")
    train(out / "off", data)
    return out


def probe_and_model(out, data):
    """The probe batch as the docs define it, from the data files themselves: the first
    --batch-size validation images (the last 20% of the first 500), scaled to [0, 1]."""
    images = np.load(data / "kmnist-train-imgs.npz")["arr_0"][:500]
    probe = images[400:450].reshape(-1, 28, 28, 1).astype("float32") / 255
    return probe, keras.models.load_model(out / "model.keras")


def test_the_last_percentiles_match_a_recomputation_from_the_saved_model(tracked, data):
    record = json.loads((tracked / "on" / "layer_inputs.json").read_text())
    probe, model = probe_and_model(tracked / "on", data)
    # The default: the inputs of the output layer (the Dense softmax), in training mode.
    cut = keras.Model(model.inputs[0], model.layers[-1].input)
    expected = np.percentile(np.asarray(cut(probe, training=True)), [15, 50, 85])
    assert record["percentiles"] == [15, 50, 85]
    np.testing.assert_allclose([record[f"p{p}"][-1] for p in (15, 50, 85)], expected,
                               rtol=1e-5, atol=1e-6)


def test_about_100_points_from_step_0_to_the_last(tracked):
    record = json.loads((tracked / "on" / "layer_inputs.json").read_text())
    steps = 2 * 8  # 400 training images in batches of 50, 2 epochs
    assert record["interval_steps"] == 1  # ceil(16 / 100)
    assert record["steps"] == list(range(steps + 1))
    assert record["probe_images"] == 50
    assert 0 < record["seconds"] < record["wall_seconds"]


class Clock:
    """layer_inputs' wall clock, set by the test."""

    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


def test_a_point_is_taken_only_while_the_measurements_stay_within_3_percent(monkeypatch):
    """The docs' promise, as a mechanism: training steps of 10 s, measurements of 1 s.
    Before step s the clock reads 10 s + m (m measurements so far, m seconds of them);
    a point is due at every step (interval 1) and taken while m <= 0.03 (10 s + m),
    that is from s >= 3.2333 m on: after step 0 (m = 1) at steps 4, 7, 10, 13, 17, 20."""
    clock = Clock()
    monkeypatch.setattr(layer_inputs, "time", clock)

    def percentiles(model, upstream, probe):
        clock.now += 1.0
        return [0.0, 0.0, 0.0]

    monkeypatch.setattr(layer_inputs, "percentiles", percentiles)
    tracker = layer_inputs.LayerInputs(None, "dense_1", None)
    tracker.params, tracker.interval, tracker.upstream = {"steps": 100}, 1, None
    tracker.started, tracker.epoch = 0.0, 0
    tracker.series = {"steps": [], "seconds": 0.0, "p15": [], "p50": [], "p85": []}
    tracker.measure(0)
    for step in range(1, 21):
        clock.now = 10.0 * step + len(tracker.series["steps"])
        tracker.on_train_batch_begin(step)
    assert tracker.series["steps"] == [0, 4, 7, 10, 13, 17, 20]
    assert tracker.series["seconds"] == 7.0


def test_tracking_leaves_training_exactly_as_it_was(tracked):
    """Same seed, tracker on or off: the same history to the last bit, moving statistics
    included (validation uses them), and the same final weights."""
    histories = [json.loads((tracked / run / "history.json").read_text())
                 for run in ("on", "off")]
    assert histories[0] == histories[1]
    models = [keras.models.load_model(tracked / run / "model.keras") for run in ("on", "off")]
    for a, b in zip(models[0].weights, models[1].weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not (tracked / "off" / "layer_inputs.json").exists()


def test_a_training_mode_call_moves_the_moving_statistics_and_the_tracker_puts_them_back():
    model = mb.build_model((28, 28, 1), 10)
    images = mb.preprocess(synthetic.make_arrays(train=20, test=1)["train_imgs"])
    norm = model.layers[-2]
    cut = keras.Model(model.inputs[0], norm.output)
    cut(images, training=True)  # Keras 3 updates moving statistics in any training call
    moved = norm.moving_mean.numpy()
    assert not np.allclose(moved, 0)
    _, layer = layer_inputs.measured_layer(model, "dense_1")
    layer_inputs.percentiles(model, keras.Model(model.inputs[0], layer.input), images)
    np.testing.assert_array_equal(norm.moving_mean.numpy(), moved)


def test_layer_names_are_those_of_the_faithful_runs_summary(data):
    """The names --layer-inputs-of takes are the ones a fresh process's summary prints."""
    result = run_script("--dry-run", "--data-dir", data, "--limit", "100")
    assert result.returncode == 0, result.stderr
    printed = [line.split("(")[0].strip(" │┃|") for line in result.stdout.splitlines()
               if "(" in line]
    assert [name for name in printed if name in layer_inputs.LESSON_LAYERS] == list(
        layer_inputs.LESSON_LAYERS)
    assert layer_inputs.lesson_names(mb.build_model((28, 28, 1), 10)) == list(
        layer_inputs.LESSON_LAYERS)


@pytest.mark.parametrize("name, batchnorm_input, plain_input", [
    ("dense_1", "batch_normalization_4", "dense"),  # the default: the output layer's inputs
    ("batch_normalization_4", "dense", "dense"),  # the Dense 256's output in both
    ("conv2d_1", "batch_normalization_1", "max_pooling2d"),
])
def test_both_variants_measure_the_same_place(name, batchnorm_input, plain_input):
    """Which layer's output is measured: a BatchNormalization layer's place in the plain
    network is the next layer's input."""
    for batchnorm, expected in ((True, batchnorm_input), (False, plain_input)):
        model = mb.build_model((28, 28, 1), 10, batchnorm)
        names = layer_inputs.lesson_names(model)
        _, layer = layer_inputs.measured_layer(model, name)
        feeding = model.layers[model.layers.index(layer) - 1]
        assert names[model.layers.index(feeding)] == expected


class CtrlCAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def test_a_resumed_run_continues_the_file(data, tmp_path, monkeypatch):
    """Ctrl-C after epoch 1, the same command again: one point per step from 0 to the
    last, those of epoch 1 kept as the first run measured them."""
    monkeypatch.setattr(layer_inputs, "BUDGET", 1e9)
    argv = ["--data-dir", str(data), "--limit", "500", "--epochs", "2", "--batch-size", "50",
            "--seed", "3", "--no-plot", "--output-dir", str(tmp_path), "--track-layer-inputs"]
    real_train = mb.train
    monkeypatch.setattr(mb, "train", lambda *args: real_train(
        *args[:-1], args[-1] + [CtrlCAfterFirstEpoch()]))
    with contextlib.redirect_stderr(io.StringIO()):
        assert cli(argv) == 130
    first = json.loads((tmp_path / "layer_inputs.json").read_text())
    assert first["steps"] == list(range(8))  # 8 steps an epoch, each measured before it
    monkeypatch.setattr(mb, "train", real_train)
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli(argv) == 0
    record = json.loads((tmp_path / "layer_inputs.json").read_text())
    assert record["steps"] == list(range(17))
    assert record["p50"][:8] == first["p50"]


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# The lesson's layers as the model summary lists them, by position: conv2d_1 is the 5th.
CONV2D_1 = 4


@pytest.mark.parametrize("flags", [[], ["--fast"], ["--distribute", "mirrored",
                                                    "--cpu-devices", "2"]],
                         ids=["default", "fast", "distribute"])
def test_another_layers_inputs_end_to_end_with_its_picture(flags, data, tmp_path):
    """--layer-inputs-of conv2d_1 in a single run (pictures on), in a fresh process as a
    user runs it: its last point is the percentiles of what reaches the second
    convolution, recomputed from model.keras on the probe batch in training mode."""
    out = tmp_path / "out"
    done = run_script("--data-dir", data, "--limit", "500", "--epochs", "1", "--batch-size",
                      "50", "--verbose", "0", "--layer-inputs-of", "conv2d_1",
                      "--output-dir", out, *flags)
    assert done.returncode == 0, done.stderr
    assert (out / "layer_inputs.png").read_bytes()[:8] == PNG_SIGNATURE
    record = json.loads((out / "layer_inputs.json").read_text())
    assert record["layer"] == "conv2d_1" and record["measured"] == "inputs of conv2d_1"
    assert record["steps"][0] == 0 and record["steps"][-1] == 8  # 400 images, batch 50
    probe, model = probe_and_model(out, data)
    assert model.layers[CONV2D_1].name == "conv2d_1"
    cut = keras.Model(model.inputs[0], model.layers[CONV2D_1].input)
    expected = np.percentile(np.asarray(cut(probe, training=True)), [15, 50, 85])
    np.testing.assert_allclose([record[f"p{p}"][-1] for p in (15, 50, 85)], expected,
                               rtol=1e-4, atol=1e-5)
