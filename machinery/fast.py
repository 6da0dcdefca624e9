"""--fast: the same model and optimisation, executed faster.

Each choice was measured with bench/benchmark.py and kept because it helped on
a CPU (docs/speed.md): fused BatchNormalization, uint8 images scaled in a
prefetching tf.data pipeline, and several steps per call into TensorFlow.
XLA (jit_compile) was measured too and was slower. bfloat16 was faster on an
avx512_bf16 CPU (2026-11-25, docs/speed.md) but changes the numerics, so --fast
computes in float32.
"""
from machinery.data import training_image_count
from machinery.quiet import keras, tf

STEPS_PER_EXECUTION = 16
# What run.json records as the --fast configuration.
SETTINGS = {"fused_batchnorm": True, "uint8_tf_data_pipeline": True,
            "steps_per_execution": STEPS_PER_EXECUTION, "xla": False,
            "mixed_precision": False}


@keras.saving.register_keras_serializable(package="machinery")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """keras.layers.BatchNormalization computed by TensorFlow's fused kernel.

    Keras 3 computes batch normalization as several small ops; TensorFlow's
    FusedBatchNormV3 does it in one. Same variables, defaults and results
    (tests/test_fast.py) with one documented difference: the fused op feeds the
    unbiased batch variance (n / (n - 1) times Keras' biased one) into the moving
    variance. Dense outputs (N, C) pass through it as (N, 1, 1, C).
    """

    def call(self, inputs, training=None, mask=None):
        if mask is not None or self.renorm or self.axis not in (-1, len(inputs.shape) - 1):
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


def uint8_batches(images, labels, batch_size, shuffle=False):
    """Batches of uint8 images, scaled to float32 in [0, 1] on the fly and prefetched.

    The scaling is the lesson's preprocess(), bit for bit; uint8 in memory takes a
    quarter of the space of a float32 copy."""
    images, labels = tf.constant(images), tf.constant(labels)
    order = tf.data.Dataset.range(images.shape[0])
    if shuffle:  # fit() shuffles its arrays every epoch; so does this
        order = order.shuffle(images.shape[0], reshuffle_each_iteration=True)

    def load(index):
        x = tf.cast(tf.gather(images, index), tf.float32) / 255
        return tf.expand_dims(x, -1), tf.cast(tf.gather(labels, index), tf.int32)

    return (order.batch(batch_size)
            .map(load, num_parallel_calls=tf.data.AUTOTUNE)
            .prefetch(tf.data.AUTOTUNE))


def fit_inputs(x_train, y_train, batch_size, validation_split):
    """model.fit's inputs: the same training and validation images as validation_split
    gives (the last share validates), as pipelines."""
    split_at = training_image_count(len(x_train), validation_split)
    return dict(
        x=uint8_batches(x_train[:split_at], y_train[:split_at], batch_size, shuffle=True),
        validation_data=uint8_batches(x_train[split_at:], y_train[split_at:], batch_size),
        shuffle=False,  # the pipeline shuffles
    )


def evaluate_inputs(x_test, y_test, batch_size):
    return dict(x=uint8_batches(x_test, y_test, batch_size))


def with_plain_layers(model):
    """A copy of a --fast model with keras.layers.BatchNormalization in place of the fused
    layer, the same weights and Adam's state: it loads anywhere, without this package."""
    def clone(layer):
        if isinstance(layer, FusedBatchNormalization):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    plain = keras.models.clone_model(model, clone_function=clone)
    plain.set_weights(model.get_weights())
    plain.compile(loss=model.loss, metrics=["accuracy"],
                  optimizer=model.optimizer.__class__.from_config(model.optimizer.get_config()))
    plain.optimizer.build(plain.trainable_variables)
    for target, source in zip(plain.optimizer.variables, model.optimizer.variables):
        target.assign(source)
    return plain
