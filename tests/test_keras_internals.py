"""machinery/keras_internals.py: what it changes inside Keras, that the lesson's numbers
stay the same, and that a Keras whose internals are not as expected is left as it is
with one line."""
import inspect
import subprocess
import sys

import numpy as np
import pytest
from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

import model_batchnorm as mb
from conftest import ROOT, cli
from test_readme_errors import readme_row
from machinery import cli as machinery_cli
from machinery import keras_internals, startup
from machinery.errors import ScriptError
from machinery.quiet import keras, tf
from testdata import synthetic

NOTE = "Note: "


@pytest.fixture
def keras_own_array_pipeline(monkeypatch):
    """Keras' ArrayDataAdapter as Keras ships it, whatever an earlier test installed;
    put back afterwards."""
    monkeypatch.setattr(ArrayDataAdapter, "get_tf_dataset",
                        inspect.unwrap(ArrayDataAdapter.get_tf_dataset))


@pytest.fixture
def iterated_pipelines(monkeypatch):
    """The options of every tf.data pipeline iterated during the test: what fit and
    evaluate really read their batches from, whoever built it."""
    seen = []
    tf_iter = tf.data.Dataset.__iter__

    def spy(dataset):
        seen.append(dataset.options())
        return tf_iter(dataset)

    monkeypatch.setattr(tf.data.Dataset, "__iter__", spy)
    return seen


def keras_array_pipeline_options():
    x, y = np.zeros((10, 28, 28, 1), "float32"), np.zeros(10, "int32")
    adapter = ArrayDataAdapter(x, y, batch_size=4, shuffle=True)
    return adapter.get_tf_dataset().options()


def test_a_prepared_run_feeds_arrays_through_a_pipeline_without_autotuning(
        keras_own_array_pipeline, tmp_path):
    assert keras_array_pipeline_options().autotune.enabled is None  # unset: tf.data autotunes
    args = machinery_cli.parse_args(["--dry-run", "--output-dir", str(tmp_path / "out")],
                                    mb.flag_defaults)
    with startup.prepared(args):
        options = keras_array_pipeline_options()
    assert options.autotune.enabled is False
    # Keras' own option stays: several workers shard the data as before.
    assert (options.experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)


def test_the_pipelines_a_real_run_trains_and_tests_on_have_no_autotuning(
        keras_own_array_pipeline, iterated_pipelines, keras_cache, tmp_path, capsys):
    assert cli(["--epochs", "1", "--limit", "300", "--batch-size", "100", "--no-plot",
                "--verbose", "0", "--output-dir", str(tmp_path / "out")]) == 0
    assert "Test loss: " in capsys.readouterr().out
    # fit's training and validation pipelines and evaluate's, at least
    assert len(iterated_pipelines) >= 3
    assert [options.autotune.enabled for options in iterated_pipelines] \
        == [False] * len(iterated_pipelines)


def test_a_keras_pipeline_shaped_otherwise_is_left_as_it_is_with_one_line(
        monkeypatch, capsys):
    def get_tf_dataset(self, shards):  # another signature than the one checked
        return None

    monkeypatch.setattr(ArrayDataAdapter, "get_tf_dataset", get_tf_dataset)
    keras_internals.array_pipelines_without_autotuning()
    assert ArrayDataAdapter.get_tf_dataset is get_tf_dataset
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(NOTE) and "ArrayDataAdapter.get_tf_dataset" in line
    assert "pause" in line and "no number changes" in line
    troubleshooting = " ".join((ROOT / "docs" / "troubleshooting.md").read_text().split())
    assert f"`{line}`" in troubleshooting  # the line the docs show


class AnotherKerasModel:
    """A model of a Keras whose internals are named or shaped otherwise."""

    def _maybe_symbolic_build(self, data):  # not (iterator, data_batch)
        return data

    def train_step(self, data):
        return data

    test_step = train_step


def test_the_distribution_workaround_leaves_another_keras_as_it_is_with_one_line(capsys):
    model = AnotherKerasModel()
    build = model._maybe_symbolic_build
    assert keras_internals.work_around_keras_distribution_bugs(model, object()) is model
    assert model._maybe_symbolic_build == build and "train_step" not in vars(model)
    (line,) = capsys.readouterr().out.splitlines()
    assert line.startswith(NOTE) and "_maybe_symbolic_build" in line


def test_a_keras_without_initial_epoch_cannot_resume_and_says_so_in_one_line():
    with pytest.raises(ScriptError, match="--restart") as refused:
        keras_internals.start_fit_at(AnotherKerasModel(), 3)
    (template,), code = readme_row("resuming under a Keras whose `fit` cannot start")
    assert code == refused.value.code == 1
    assert template == f"error: {refused.value}"


WITHOUT_THE_ADAPTER = """
import runpy, sys
import machinery.quiet  # TensorFlow's start-up lines filtered, as the script's first import does
import keras.src.trainers.data_adapters.array_data_adapter as moved
del moved.ArrayDataAdapter  # Keras keeps its own reference; keras_internals finds none
sys.argv = ["model_batchnorm.py", *sys.argv[1:]]
runpy.run_path("model_batchnorm.py", run_name="__main__")
"""


def test_a_smoke_run_on_a_keras_without_the_patched_internal_completes_with_one_note(
        module_data_dir, tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_ADAPTER, "--epochs", "2", "--limit", "300",
         "--batch-size", "100", "--no-plot", "--data-dir", str(module_data_dir),
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    notes = [line for line in done.stdout.splitlines() if "keras_internals.py" in line]
    assert len(notes) == 1 and notes[0].startswith(NOTE), done.stdout
    assert "ArrayDataAdapter" in notes[0]
    assert [line for line in done.stdout.splitlines() if line.startswith("Test loss: ")]
    assert (tmp_path / "out" / "history.json").exists()


def train_the_lesson_on_arrays(arrays, seed=7):
    """The default path's fit and evaluate on arrays, seeded; its weights, history, loss."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = mb.compile_model(mb.build_model(mb.input_shape, 10))
    history = model.fit(mb.preprocess(arrays["train_imgs"]), arrays["train_labels"],
                        batch_size=100, epochs=2, validation_split=0.2, verbose=0)
    evaluation = model.evaluate(mb.preprocess(arrays["test_imgs"]), arrays["test_labels"],
                                verbose=0)
    return model.get_weights(), history.history, evaluation


def test_without_autotuning_the_lesson_computes_exactly_the_same_numbers(
        keras_own_array_pipeline):
    arrays = synthetic.make_arrays(train=600, test=200, seed=3)
    weights, history, evaluation = train_the_lesson_on_arrays(arrays)  # as Keras ships
    keras_internals.array_pipelines_without_autotuning()
    assert keras_array_pipeline_options().autotune.enabled is False
    weights_after, history_after, evaluation_after = train_the_lesson_on_arrays(arrays)
    assert history_after == history
    assert evaluation_after == evaluation
    for before, after in zip(weights, weights_after, strict=True):
        np.testing.assert_array_equal(after, before)
