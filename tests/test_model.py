"""The network, the configuration and the preprocessing are the lesson's."""
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from machinery import record

# (layer type, output shape, parameters) from the reference's table.
LAYER_TABLE = [
    ("Conv2D", (26, 26, 32), 320),
    ("BatchNormalization", (26, 26, 32), 128),
    ("MaxPooling2D", (13, 13, 32), 0),
    ("BatchNormalization", (13, 13, 32), 128),
    ("Conv2D", (11, 11, 64), 18_496),
    ("BatchNormalization", (11, 11, 64), 256),
    ("MaxPooling2D", (5, 5, 64), 0),
    ("BatchNormalization", (5, 5, 64), 256),
    ("Flatten", (1600,), 0),
    ("Dense", (256,), 409_856),
    ("BatchNormalization", (256,), 1_024),
    ("Dense", (10,), 2_570),
]


@pytest.fixture(scope="module")
def model():
    return mb.build_model((28, 28, 1), 10)


def test_constants_are_the_lessons_configuration():
    assert (mb.batch_size, mb.no_epochs, mb.no_classes) == (250, 25, 10)
    assert mb.validation_split == 0.2
    assert mb.verbosity == 1


def test_layers_follow_the_reference_table(model):
    rows = [(type(layer).__name__, tuple(layer.output.shape[1:]), layer.count_params())
            for layer in model.layers]
    assert rows == LAYER_TABLE


def test_model_starts_with_keras_input_of_one_channel(model):
    assert tuple(model.inputs[0].shape) == (None, 28, 28, 1)


def test_convolutions_pooling_and_dense_settings(model):
    conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [(c.filters, c.kernel_size, c.activation.__name__) for c in conv] == [
        (32, (3, 3), "relu"), (64, (3, 3), "relu")]
    pools = [layer for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert [p.pool_size for p in pools] == [(2, 2), (2, 2)]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert [(d.units, d.activation.__name__) for d in dense] == [(256, "relu"), (10, "softmax")]


def test_every_batchnormalization_keeps_keras_defaults(model):
    norms = [layer for layer in model.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(norms) == 5
    for layer in norms:
        assert layer.axis == -1
        assert (layer.momentum, layer.epsilon) == (0.99, 0.001)
        assert layer.center and layer.scale
        np.testing.assert_array_equal(layer.beta.numpy(), 0)
        np.testing.assert_array_equal(layer.gamma.numpy(), 1)
        np.testing.assert_array_equal(layer.moving_mean.numpy(), 0)
        np.testing.assert_array_equal(layer.moving_variance.numpy(), 1)


def test_parameter_counts(model):
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights)
    assert (model.count_params(), trainable, frozen) == (433_034, 432_138, 896)


def test_without_batchnorm_the_network_has_431242_parameters():
    plain = mb.build_model((28, 28, 1), 10, batchnorm=False)
    assert plain.count_params() == 431_242
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in plain.layers)


def test_k49_gets_49_outputs():
    assert mb.build_model((28, 28, 1), 49).layers[-1].units == 49


def test_building_the_model_raises_no_warning():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mb.build_model((28, 28, 1), 10)
    assert [str(w.message) for w in caught] == []


def test_compile_uses_adam_defaults_and_sparse_crossentropy(model):
    compiled = mb.compile_model(mb.build_model((28, 28, 1), 10))
    assert isinstance(compiled.optimizer, keras.optimizers.Adam)
    assert float(compiled.optimizer.learning_rate) == pytest.approx(0.001)
    assert compiled.loss is keras.losses.sparse_categorical_crossentropy


def test_preprocess_reshapes_converts_and_scales():
    x = np.array([[[0] * 28] * 28, [[255] * 28] * 28], dtype=np.uint8)
    x[0, 3, 5] = 51
    out = mb.preprocess(x)
    assert out.shape == (2, 28, 28, 1) and out.dtype == np.float32
    assert out.min() == 0.0 and out.max() == 1.0
    assert out[0, 3, 5, 0] == pytest.approx(0.2)


class DivisionSpy(np.ndarray):
    """An array that records the dtype of whatever it is divided as."""
    divided = []

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if ufunc is np.true_divide:
            DivisionSpy.divided.append(inputs[0].dtype)
        plain = [x.view(np.ndarray) if isinstance(x, DivisionSpy) else x for x in inputs]
        return getattr(ufunc, method)(*plain, **kwargs)


def test_preprocess_converts_before_dividing():
    # Dividing the uint8 images first would divide in float64 and convert afterwards.
    DivisionSpy.divided.clear()
    out = mb.preprocess(np.full((1, 28, 28), 7, np.uint8).view(DivisionSpy))
    assert DivisionSpy.divided == [np.float32]
    assert out.dtype == np.float32 and out[0, 0, 0, 0] == np.float32(7) / np.float32(255)


def test_balanced_accuracy_matches_hand_computed_value():
    y_true = [0, 0, 0, 1, 1, 2]
    y_pred = [0, 0, 1, 1, 0, 2]
    # class 0: 2/3, class 1: 1/2, class 2: 1/1
    assert record.balanced_accuracy(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)


def test_importing_the_module_trains_and_writes_nothing(tmp_path):
    import subprocess
    import sys
    # Run from an empty folder: importing must leave it empty (a user's earlier
    # run may well have left outputs/ in the checkout; that is not ours to judge).
    root = Path(mb.__file__).parent
    code = ("import sys; sys.path.insert(0, sys.argv[1]); "
            "import model_batchnorm, plot_history; print('imported')")
    done = subprocess.run([sys.executable, "-c", code, str(root)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout == "imported\n", done.stderr
    assert list(tmp_path.iterdir()) == []
