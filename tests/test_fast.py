"""--fast changes how the work runs, not what is computed."""
import inspect
import json
import warnings

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import settings_for
from machinery import fast
from testdata import synthetic


def fit_inputs(arrays, batch_size):
    """fit's inputs under --fast at this batch size, the last 20% validating."""
    x, y = arrays["train_imgs"], arrays["train_labels"]
    run = settings_for(["--fast", "--batch-size", batch_size], ((x, y), (x, y)))
    return fast.fit_inputs(x, y, run)


def test_fused_layer_without_gamma_and_beta_is_keras_own():
    """center=False, scale=False (--compare gamma-beta under --fast): no gamma or beta to
    hand the fused kernel, so Keras' own computation, the same numbers."""
    shape, rng = (40, 5, 5, 8), np.random.default_rng(1)
    plain = keras.layers.BatchNormalization(center=False, scale=False)
    fused = fast.FusedBatchNormalization(center=False, scale=False)
    x = rng.normal(1.0, 2.0, shape).astype("float32")
    for training in (True, False):
        np.testing.assert_allclose(fused(x, training=training), plain(x, training=training),
                                   rtol=1e-6, atol=1e-6)
    assert fused.gamma is None and fused.beta is None


def layer_pair(shape):
    plain, fused = keras.layers.BatchNormalization(), fast.FusedBatchNormalization()
    plain.build(shape)
    fused.build(shape)
    return plain, fused


@pytest.mark.parametrize("shape", [(50, 26, 26, 32), (50, 256)], ids=["conv", "dense"])
def test_fused_layer_matches_keras_in_training_and_inference(shape):
    rng = np.random.default_rng(0)
    plain, fused = layer_pair(shape)
    gamma, beta = rng.uniform(0.5, 1.5, shape[-1]), rng.normal(0, 0.5, shape[-1])
    for layer in (plain, fused):  # learned scale and offset away from their defaults
        layer.gamma.assign(gamma)
        layer.beta.assign(beta)
    batches = [rng.normal(1.0, 2.0, shape).astype("float32") for _ in range(5)]
    for x in batches:
        np.testing.assert_allclose(fused(x, training=True), plain(x, training=True),
                                   rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5, atol=1e-6)
    # The fused op feeds the unbiased batch variance into the moving average:
    # n / (n - 1) times Keras' biased one, over n values per channel.
    n = int(np.prod(shape[:-1]))
    expected = np.ones(shape[-1])
    for x in batches:
        variance = x.reshape(-1, shape[-1]).astype("float64").var(axis=0) * n / (n - 1)
        expected = 0.99 * expected + 0.01 * variance
    np.testing.assert_allclose(fused.moving_variance, expected, rtol=1e-5)
    # Given the same moving statistics, inference is the same computation.
    plain.moving_variance.assign(fused.moving_variance)
    np.testing.assert_allclose(fused(batches[0]), plain(batches[0]), rtol=1e-4, atol=1e-5)


def set_statistics(layer, mean, variance, gamma, beta):
    for variable, value in ((layer.moving_mean, mean), (layer.moving_variance, variance),
                            (layer.gamma, gamma), (layer.beta, beta)):
        variable.assign(np.full(variable.shape, value, "float32"))


def normalised_by_hand(x, mean, variance, gamma, beta, epsilon=0.001):
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


@pytest.mark.parametrize("shape", [(6, 5, 5, 3), (6, 3)], ids=["conv", "dense"])
def test_fused_layer_at_inference_uses_the_moving_statistics(shape):
    _, fused = layer_pair(shape)
    set_statistics(fused, mean=0.5, variance=0.01, gamma=2.0, beta=0.1)
    x = np.random.default_rng(1).normal(0.5, 0.3, shape).astype("float32")
    expected = normalised_by_hand(x, 0.5, 0.01, 2.0, 0.1)
    np.testing.assert_allclose(fused(x, training=False), expected, rtol=1e-4, atol=1e-4)
    # One image alone is normalised exactly as inside the batch.
    np.testing.assert_allclose(fused(x[:1], training=False), expected[:1], rtol=1e-4, atol=1e-4)


def test_frozen_fused_layer_is_left_untouched_in_training():
    _, fused = layer_pair((6, 5, 5, 3))
    set_statistics(fused, mean=0.5, variance=0.01, gamma=2.0, beta=0.1)
    fused.trainable = False
    x = np.random.default_rng(2).normal(3.0, 1.0, (6, 5, 5, 3)).astype("float32")
    y = fused(x, training=True)
    # As Keras' own layer: frozen, it normalises with the moving statistics and keeps them.
    np.testing.assert_allclose(y, normalised_by_hand(x, 0.5, 0.01, 2.0, 0.1), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(fused.moving_mean, np.full(3, 0.5, "float32"))
    np.testing.assert_array_equal(fused.moving_variance, np.full(3, 0.01, "float32"))


def epoch_of(dataset):
    """One pass over a (float images, labels) pipeline, images back as uint8."""
    images, labels = zip(*[(x.numpy(), y.numpy()) for x, y in dataset])
    return np.rint(np.concatenate(images)[..., 0] * 255).astype(np.uint8), np.concatenate(labels)


def test_fast_training_images_are_reshuffled_every_epoch():
    arrays = synthetic.make_arrays(train=600, test=1)
    pipeline = fit_inputs(arrays, 250)["x"]
    (first, first_labels), (second, second_labels) = epoch_of(pipeline), epoch_of(pipeline)
    training = arrays["train_imgs"][:480]
    label_of = {image.tobytes(): label for image, label in zip(training, arrays["train_labels"])}
    for images, labels in ((first, first_labels), (second, second_labels)):
        # The same 480 training images, each with its own label, in a shuffled order.
        assert sorted(image.tobytes() for image in images) == sorted(
            image.tobytes() for image in training)
        assert [label_of[image.tobytes()] for image in images] == list(labels)
        assert not np.array_equal(images, training)
    assert not np.array_equal(first, second)  # a new order each epoch


def test_fused_layer_has_the_same_variables_and_defaults():
    plain, fused = layer_pair((8, 4))
    assert [v.path.split("/")[-1] for v in fused.weights] == [
        v.path.split("/")[-1] for v in plain.weights]
    assert fused.get_config()["momentum"] == 0.99 and fused.get_config()["epsilon"] == 0.001


def test_fast_model_has_the_lessons_parameters():
    model = mb.build_model((28, 28, 1), 10, norm_layer=fast.FusedBatchNormalization)
    assert model.count_params() == 433_034
    assert sum(isinstance(layer, fast.FusedBatchNormalization) for layer in model.layers) == 5


def test_model_with_fused_layers_saves_and_reloads(tmp_path):
    model = mb.compile_model(mb.build_model((28, 28, 1), 10, norm_layer=fast.FusedBatchNormalization))
    model.fit(np.random.rand(64, 28, 28, 1), np.arange(64) % 10, epochs=1, verbose=0)
    model.save(tmp_path / "fused.keras")
    reloaded = keras.models.load_model(tmp_path / "fused.keras")
    assert isinstance(reloaded.layers[1], fast.FusedBatchNormalization)
    x = np.random.rand(4, 28, 28, 1).astype("float32")
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_fast_pipelines_run_without_tf_data_autotuning():
    # docs/speed.md, the stall between epochs: autotuning's thread is what a dropped
    # iterator waits for, so --fast's pipelines have it off and fixed parallelism.
    arrays = synthetic.make_arrays(train=20, test=4)
    inputs = fit_inputs(arrays, 5)
    for pipeline in (inputs["x"], inputs["validation_data"]):
        assert pipeline.options().autotune.enabled is False


def test_pipeline_scales_exactly_like_preprocess():
    arrays = synthetic.make_arrays(train=30, test=1)
    batches = list(fast.uint8_batches(arrays["train_imgs"], arrays["train_labels"], 8,
                                      mb.preprocess))
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    np.testing.assert_array_equal(images, mb.preprocess(arrays["train_imgs"]))
    np.testing.assert_array_equal(labels, arrays["train_labels"])
    assert [len(x) for x, _ in batches] == [8, 8, 8, 6]


def test_pipeline_runs_preprocess_as_written_without_autograph():
    # Autograph would rewrite preprocess through gast, which warns on Python 3.13 (a
    # DeprecationWarning per node); the pipeline's function is straight-line code.
    ran_from = []

    def preprocess(images):
        ran_from.append(inspect.currentframe().f_code.co_filename)
        return mb.preprocess(images)

    arrays = synthetic.make_arrays(train=4, test=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(fast.uint8_batches(arrays["train_imgs"], arrays["train_labels"], 2, preprocess))
    assert ran_from == [__file__]
    assert [str(w.message) for w in caught] == []


def test_fast_holds_out_the_same_validation_images(keras_cache):
    arrays = synthetic.make_arrays(train=600, test=200)
    inputs = fit_inputs(arrays, 250)
    validation = np.concatenate([x.numpy() for x, _ in inputs["validation_data"]])
    np.testing.assert_array_equal(validation, mb.preprocess(arrays["train_imgs"][480:]))
    shuffled = np.concatenate([y.numpy() for _, y in inputs["x"]])
    assert sorted(shuffled) == sorted(arrays["train_labels"][:480])


def test_fast_run_writes_the_same_files_and_learns(keras_cache, tmp_path):
    result = mb.main(["--fast", "--epochs", "3", "--output-dir", str(tmp_path)])
    for name in ("history.json", "history.csv", "model.keras", "run.json",
                 "training_history.png", "predictions.png", "confusion_matrix.png"):
        assert (tmp_path / name).exists(), name
    run = json.loads((tmp_path / "run.json").read_text())
    # docs/speed.md: fused BatchNormalization, a uint8 tf.data pipeline without autotuning,
    # 16 steps per call; float32 unless --precision says otherwise.
    assert run["config"]["fast"] == {"fused_batchnorm": True, "uint8_tf_data_pipeline": True,
                                     "steps_per_execution": 16, "xla": False,
                                     "tf_data_autotune": False}
    assert run["config"]["precision"] == "float32"
    assert (run["train_images"], run["validation_images"]) == (480, 120)
    assert len(run["epoch_seconds"]) == 3 and run["evaluation_seconds"] > 0
    history = json.loads((tmp_path / "history.json").read_text())
    assert [len(values) for values in history.values()] == [3, 3, 3, 3]
    assert history["loss"][-1] < history["loss"][0] and history["accuracy"][-1] > 0.5
    assert result["model"].steps_per_execution == 16
    # Saved with the lesson's own layers: loads without this module's custom layer.
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert type(reloaded.layers[1]) is keras.layers.BatchNormalization
    trained_state = [v.numpy() for v in result["model"].optimizer.variables]
    assert len(reloaded.optimizer.variables) == len(trained_state) == 38
    for restored, trained in zip(reloaded.optimizer.variables, trained_state):
        np.testing.assert_array_equal(restored.numpy(), trained)
    x = mb.preprocess(synthetic.make_arrays(train=1, test=8, seed=3)["test_imgs"])
    np.testing.assert_allclose(reloaded.predict(x, verbose=0),
                               result["model"].predict(x, verbose=0), atol=1e-5)


def test_fused_layer_works_on_a_keras_whose_batchnormalization_has_no_renorm():
    # Python 3.10 gets Keras 3.12, whose BatchNormalization has no renorm attribute.
    shape = (20, 6, 6, 4)
    plain, fused = layer_pair(shape)
    vars(fused).pop("renorm", None)
    assert not hasattr(fused, "renorm")
    x = np.random.default_rng(1).normal(1.0, 2.0, shape).astype("float32")
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True),
                               rtol=1e-4, atol=1e-4)
