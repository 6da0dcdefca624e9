"""machinery/keras_internals.py: what it changes inside Keras, and that the lesson's numbers
stay the same."""
import argparse
import inspect

import numpy as np
import pytest
from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter

import model_batchnorm as mb
from machinery import keras_internals, startup
from machinery.quiet import keras, tf
from testdata import synthetic


@pytest.fixture
def keras_own_array_pipeline(monkeypatch):
    """Keras' ArrayDataAdapter as Keras ships it, whatever an earlier test installed;
    put back afterwards."""
    monkeypatch.setattr(ArrayDataAdapter, "get_tf_dataset",
                        inspect.unwrap(ArrayDataAdapter.get_tf_dataset))


def keras_array_pipeline_options():
    x, y = np.zeros((10, 28, 28, 1), "float32"), np.zeros(10, "int32")
    adapter = ArrayDataAdapter(x, y, batch_size=4, shuffle=True)
    return adapter.get_tf_dataset().options()


def test_the_internals_touched_are_those_of_the_checked_versions():
    # keras_internals.py wraps Keras' array pipeline and model build and configures
    # TensorFlow's coordination service by hand: checked against these releases only.
    assert (tf.__version__, keras.__version__) == ("2.21.0", "3.15.1")
    assert (keras_internals.TF_CHECKED, keras_internals.KERAS_CHECKED) == ("2.21.0", "3.15.1")


def test_a_prepared_run_feeds_arrays_through_a_pipeline_without_autotuning(
        keras_own_array_pipeline, tmp_path):
    assert keras_array_pipeline_options().autotune.enabled is None  # unset: tf.data autotunes
    args = argparse.Namespace(output_dir=tmp_path / "out", distribute=None, cpu_devices=2,
                              seed=None, dry_run=True, overwrite=False, slurm_port=8888,
                              batch_size=250, sync_bn=False, precision="float32",
                              learning_rates=[0.001])
    with startup.prepared(args):
        options = keras_array_pipeline_options()
    assert options.autotune.enabled is False
    # Keras' own option stays: several workers shard the data as before.
    assert (options.experimental_distribute.auto_shard_policy
            == tf.data.experimental.AutoShardPolicy.DATA)


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
