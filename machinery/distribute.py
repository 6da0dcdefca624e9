"""--distribute: training under tf.distribute, on several devices or machines.

The one module that touches Keras internals (a workaround for two bugs of
Keras 3.15.1 under MultiWorkerMirroredStrategy, checked against Keras 3.15.1);
tests/test_distribute.py fails if Keras changes under it.
"""
import contextlib
import json
import os

from machinery.errors import ScriptError
from machinery.quiet import tf

KERAS_CHECKED = "3.15.1"


def make_strategy(name, cpu_devices=2):
    """The tf.distribute strategy for --distribute, or None. Must run before
    TensorFlow starts its devices, so it runs first."""
    if name is None:
        return None
    if name == "multiworker":
        try:
            json.loads(os.environ["TF_CONFIG"])
        except KeyError:
            raise ScriptError("--distribute multiworker needs the cluster in the TF_CONFIG "
                              "environment variable: see docs/distributed.md") from None
        except ValueError as err:
            raise ScriptError(f"TF_CONFIG is not valid JSON ({err}): see docs/distributed.md") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def is_chief(strategy):
    """Only one process writes the output folder: the chief, or worker 0 if none is named."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    return (resolver.task_type in (None, "chief")
            or (resolver.task_type == "worker" and resolver.task_id == 0
                and "chief" not in resolver.cluster_spec().as_dict()))


def scope(strategy):
    """Where the model must be built: the strategy's scope, or nowhere special."""
    return strategy.scope() if strategy else contextlib.nullcontext()


def work_around_keras_distribution_bugs(model, strategy):
    """Two Keras 3.15 bugs under tf.distribute, worked around on this model only
    (tests/test_distribute.py would fail if either came back):
    1. Before the first step, fit/evaluate/predict average the whole first
       distributed batch with strategy.reduce, which MultiWorkerMirroredStrategy
       rejects, and which fails under MirroredStrategy too whenever the replicas'
       shares of a batch differ in size (a batch of 250 on 3 devices, say).
       The model is already built from keras.Input; its loss and metrics only need
       the shapes, which one replica's local batch gives.
    2. Under MultiWorkerMirroredStrategy, each step's logs are averaged with
       strategy.reduce("MEAN", v, axis=0), which fails on scalars. Returned with
       shape (1,), they average to the scalar mean across workers."""
    if strategy is None:
        return model
    keras_build = model._maybe_symbolic_build

    def build(iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0], next(batches))
                break
        return keras_build(data_batch=data_batch)

    def with_shaped_logs(step):
        return lambda data: tf.nest.map_structure(lambda v: tf.reshape(v, (1,)), step(data))

    model._maybe_symbolic_build = build
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return model
    model.train_step = with_shaped_logs(model.train_step)
    model.test_step = with_shaped_logs(model.test_step)
    return model
