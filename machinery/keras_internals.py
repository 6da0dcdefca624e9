"""The one module that touches Keras' and TensorFlow's internals, each checked against
the versions below (tests/test_keras_internals.py fails when either changes under it):

- Keras' own input pipelines for NumPy arrays without tf.data's autotuning, whose
  thread stalls a process for seconds between epochs (docs/speed.md);
- a workaround for two Keras bugs under tf.distribute (--distribute);
- TensorFlow's coordination service with a bounded heartbeat (a lost worker).
"""
import functools

from machinery import fast
from machinery.quiet import tf

KERAS_CHECKED = "3.15.1"
TF_CHECKED = "2.21.0"


def array_pipelines_without_autotuning():
    """From now on, the tf.data pipeline that fit, evaluate and predict build for NumPy
    arrays runs without tf.data's autotuning, as --fast's own pipelines do.

    Autotuning's thread makes each epoch's dropped iterator wait for it, for up to a few
    seconds with no CPU used (bench/stall_repro.py). Without it the pipeline's parallel
    map and prefetch keep their defaults; batches, their order and the shuffle are
    unchanged, so every number the lesson computes is too (tests/test_keras_internals.py).
    Idempotent: the first call wraps Keras' ArrayDataAdapter.get_tf_dataset."""
    from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
    keras_pipeline = ArrayDataAdapter.get_tf_dataset
    if getattr(keras_pipeline, "without_autotuning", False):
        return

    @functools.wraps(keras_pipeline)
    def get_tf_dataset(self):
        return fast.without_autotuning(keras_pipeline(self))

    get_tf_dataset.without_autotuning = True
    ArrayDataAdapter.get_tf_dataset = get_tf_dataset


def bound_lost_worker_wait(resolver, heartbeat_timeout_s):
    """Configure TensorFlow's coordination service as MultiWorkerMirroredStrategy would,
    but with a heartbeat timeout of heartbeat_timeout_s (it then skips its own set-up):
    a peer silent that long is lost, and every collective is aborted."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.distribute import multi_worker_util
    from tensorflow.python.eager import context
    spec = (resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()).cluster_spec()
    jobs = [coordination_config_pb2.CoordinatedJob(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
        coordinated_jobs=jobs, heartbeat_timeout_in_ms=heartbeat_timeout_s * 1000)


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
