"""--fast and --precision: the same model and optimisation, run faster: fused BatchNormalization,
uint8 images in a tf.data pipeline without autotuning, several steps per call (each measured
with bench/benchmark.py, docs/speed.md; XLA did not help), bfloat16 where computed natively."""
import contextlib
from pathlib import Path

from machinery.quiet import keras, tf

STEPS_PER_EXECUTION = 16
# Fixed, not autotuned: the map is a gather and a cast, and autotuning's thread is
# what a dropped iterator waits for (bench/stall_repro.py).
PARALLEL_CALLS, PREFETCH_BATCHES = 2, 2
# What run.json records as the --fast configuration.
SETTINGS = {"fused_batchnorm": True, "uint8_tf_data_pipeline": True,
            "steps_per_execution": STEPS_PER_EXECUTION, "xla": False,
            "tf_data_autotune": False}
# CPU flags of native bfloat16 arithmetic (AVX-512 BF16, AMX).
BFLOAT16_CPU_FLAGS = {"avx512_bf16", "amx_bf16"}


def cpu_flags(cpuinfo=Path("/proc/cpuinfo")):
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo is not there."""
    try:
        lines = cpuinfo.read_text().splitlines()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in lines
                 if line.startswith("flags")), set())


def bfloat16_hardware():
    """What computes bfloat16 natively here ('a GPU', the CPU's flags), or None."""
    if tf.config.list_physical_devices("GPU"):
        return "a GPU"
    native = sorted(BFLOAT16_CPU_FLAGS & cpu_flags())
    return f"the CPU's {' and '.join(native)}" if native else None


def effective_precision(requested):
    """The precision this run computes in: bfloat16 only on native hardware."""
    if requested == "bfloat16" and bfloat16_hardware() is None:
        print("Note: --precision bfloat16 needs native bfloat16 (avx512_bf16 or amx_bf16 "
              "in the CPU's flags, or a GPU); this machine has neither, so the run "
              "computes in float32.")
        return "float32"
    return requested


@contextlib.contextmanager
def precision_policy(precision):
    """Layers built inside compute in `precision`; bfloat16 is Keras' mixed_bfloat16
    policy (float32 variables, bfloat16 arithmetic; BatchNormalization normalises in
    float32, in Keras' layer and in FusedBatchNormalization alike)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16" if precision == "bfloat16" else "float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@keras.saving.register_keras_serializable(package="machinery")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel.

    Keras 3 computes batch normalization as several small ops; TensorFlow's FusedBatchNormV3 does
    it in one. Same variables, defaults and results (tests/test_fast.py) with one documented
    difference: the fused op feeds the unbiased batch variance (n / (n - 1) times Keras' biased
    one) into the moving variance. Dense outputs (N, C) pass through it as (N, 1, 1, C)."""

    def call(self, inputs, training=None, mask=None):
        # --sync-bn: Keras' own; renorm is unknown to the Keras that Python 3.10 gets (3.12)
        if (mask is not None or getattr(self, "renorm", False) or self.synchronized
                or not (self.center and self.scale)  # no γ or β to hand the fused kernel
                or self.axis not in (-1, len(inputs.shape) - 1)):
            return super().call(inputs, training=training, mask=mask)
        shape = tf.shape(inputs)
        x = tf.cast(inputs, "float32")
        if len(inputs.shape) == 2:
            x = tf.reshape(x, (-1, 1, 1, inputs.shape[-1]))
        arguments = dict(x=x, scale=self.gamma, offset=self.beta, mean=self.moving_mean,
                         variance=self.moving_variance, epsilon=self.epsilon)
        if training and self.trainable:
            y, moving_mean, moving_variance = tf.compat.v1.nn.fused_batch_norm(
                **arguments, is_training=True, exponential_avg_factor=1.0 - self.momentum)
            self.moving_mean.assign(moving_mean)
            self.moving_variance.assign(moving_variance)
        else:
            y, _, _ = tf.compat.v1.nn.fused_batch_norm(**arguments, is_training=False)
        return tf.cast(tf.reshape(y, shape), self.compute_dtype)


def steps_per_execution(fast, sync_bn):
    """Training steps per call into TensorFlow: STEPS_PER_EXECUTION under --fast, except one with
    --sync-bn (as without --fast), whose cross-replica statistics TensorFlow cannot compute inside
    a loop of several steps (it stops with "You must feed a value for placeholder tensor")."""
    return STEPS_PER_EXECUTION if fast and not sync_bn else 1


def recorded(run):
    """What run.json records as this run's --fast configuration (None without it)."""
    return {**SETTINGS, "steps_per_execution": run.steps_per_execution} if run.fast else None


class InGraph:
    """A batch of images in a tf.data pipeline with what the lesson's preprocess() uses of a NumPy
    array (shape, reshape, astype, division): the one scaling runs op for op as on arrays."""

    def __init__(self, tensor):
        self.tensor = tensor

    @property
    def shape(self):
        return tuple(self.tensor.shape)  # a batch's size is None: unknown until it runs

    def reshape(self, *shape):
        return InGraph(tf.reshape(self.tensor, [-1 if side is None else side for side in shape]))

    def astype(self, dtype):
        return InGraph(tf.cast(self.tensor, dtype))

    def __truediv__(self, divisor):
        return InGraph(self.tensor / divisor)


def uint8_batches(images, labels, batch_size, preprocess, shuffle=False):
    """Batches of uint8 images scaled on the fly by `preprocess` (the lesson's), prefetched: bit
    for bit preprocess() of the arrays, with uint8 in memory, a quarter of a float32 copy."""
    images, labels = tf.constant(images), tf.constant(labels)
    order = tf.data.Dataset.range(images.shape[0])
    if shuffle:  # fit() shuffles its arrays every epoch; so does this
        order = order.shuffle(images.shape[0], reshuffle_each_iteration=True)

    @tf.autograph.experimental.do_not_convert  # straight-line code: nothing to convert
    def load(index):
        x = preprocess(InGraph(tf.gather(images, index))).tensor
        return x, tf.cast(tf.gather(labels, index), tf.int32)

    return without_autotuning(order.batch(batch_size)
                              .map(load, num_parallel_calls=PARALLEL_CALLS)
                              .prefetch(PREFETCH_BATCHES))


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuning off: its thread is what a dropped iterator
    waits for between epochs, for up to seconds (docs/speed.md). The same batches."""
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def fit_inputs(x_train, y_train, run):
    """model.fit's inputs: the same training and validation images as validation_split
    gives (the last share validates), as pipelines."""
    split_at, size, preprocess = run.split_at, run.batch_size, run.preprocess
    return dict(
        x=uint8_batches(x_train[:split_at], y_train[:split_at], size, preprocess, shuffle=True),
        validation_data=uint8_batches(x_train[split_at:], y_train[split_at:], size, preprocess),
        shuffle=False,  # the pipeline shuffles
    )


def evaluate_inputs(x_test, y_test, run):
    return dict(x=uint8_batches(x_test, y_test, run.batch_size, run.preprocess))


def with_plain_layers(model):
    """A float32 copy of a --fast or bfloat16 model, keras.layers.BatchNormalization in place of
    the fused layer, same weights and Adam's state: it loads anywhere, without this package."""
    def clone(layer):
        config = {**layer.get_config(), "dtype": "float32"}
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(config)
        return layer.__class__.from_config(config)

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    plain.compile(loss=model.loss, metrics=["accuracy"],
                  optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()))
    plain.optimizer.build(plain.trainable_variables)
    for target, source in zip(plain.optimizer.variables, model.optimizer.variables):
        target.assign(source)
    return plain
