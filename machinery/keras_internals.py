"""The one module that touches Keras' and TensorFlow's internals: Keras' array pipelines without
autotuning, the epoch a resumed fit starts at, two Keras bugs under tf.distribute, the
coordination service's heartbeat. Each use first checks at run time that what it changes is there
and shaped as expected; if not, Keras is left alone and one line (no traceback) says the cost."""
import functools
import inspect

from machinery import fast
from machinery.errors import ScriptError
from machinery.quiet import tf


def shaped(owner, name, parameters):
    """owner.name if it is a callable taking exactly `parameters`, else None."""
    function = getattr(owner, name, None)
    if not callable(function):
        return None
    try:
        found = list(inspect.signature(function).parameters)
    except (TypeError, ValueError):  # a builtin without a signature
        return None
    return function if found == list(parameters) else None


def left_as_it_is(internal, cost):
    """The one line said where an internal is not as expected."""
    print(f"Note: {internal} is not as machinery/keras_internals.py expects it, so it is "
          f"left as it is: {cost}.")


def keras_array_adapter():
    """Keras' ArrayDataAdapter class, or None where this Keras has none there."""
    try:
        from keras.src.trainers.data_adapters.array_data_adapter import ArrayDataAdapter
    except ImportError:
        return None
    return ArrayDataAdapter


def array_pipelines_without_autotuning():
    """From now on, the tf.data pipeline that fit, evaluate and predict build for NumPy arrays runs
    without autotuning, whose thread makes each epoch's dropped iterator wait for seconds
    (bench/stall_repro.py). Same batches, same order: no number changes. Idempotent."""
    adapter = keras_array_adapter()
    keras_pipeline = shaped(adapter, "get_tf_dataset", ["self"])
    if keras_pipeline is None:
        left_as_it_is("Keras' ArrayDataAdapter.get_tf_dataset(self)",
                      "tf.data autotunes, and its pause of up to seconds between epochs "
                      "comes back (docs/speed.md); no number changes")
        return
    if getattr(keras_pipeline, "without_autotuning", False):
        return

    @functools.wraps(keras_pipeline)
    def get_tf_dataset(self):
        dataset = keras_pipeline(self)
        if not isinstance(dataset, tf.data.Dataset):  # not what Keras returned when checked
            return dataset
        return fast.without_autotuning(dataset)

    get_tf_dataset.without_autotuning = True
    adapter.get_tf_dataset = get_tf_dataset


def start_fit_at(model, epoch):
    """From a callback's on_train_begin: fit's first epoch is `epoch` (0-based), as Keras' own
    BackupAndRestore resumes, through the model's _initial_epoch, which fit reads after
    on_train_begin. A Keras whose fit reads none cannot resume so: one line, the backup kept."""
    fit = getattr(type(model), "fit", None)
    try:
        reads_it = "_initial_epoch" in inspect.getsource(fit)
    except (OSError, TypeError):  # no source to check
        reads_it = False
    if not hasattr(model, "_initial_epoch") or not reads_it:
        raise ScriptError(
            "this Keras gives fit no way to start at a backed-up epoch as "
            "machinery/keras_internals.py expects (Model._initial_epoch): install the tested "
            "versions (pip install -r requirements.lock) to resume, or add --restart")
    model._initial_epoch = epoch


def tf_coordination_service():
    """TensorFlow's internals that bound_lost_worker_wait uses, or None if absent or misshapen."""
    try:
        from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
        from tensorflow.python.distribute import multi_worker_util
        from tensorflow.python.eager import context
    except ImportError:
        return None
    configure = getattr(context.context(), "configure_coordination_service", None)
    try:
        parameters = inspect.signature(configure).parameters
    except (TypeError, ValueError):
        return None
    used = {"service_type", "service_leader", "coordinated_jobs", "heartbeat_timeout_in_ms"}
    if not used <= set(parameters) or not hasattr(coordination_config_pb2, "CoordinatedJob") \
            or shaped(multi_worker_util, "coordination_leader", ["cluster_spec"]) is None:
        return None
    return configure, coordination_config_pb2.CoordinatedJob, multi_worker_util


def bound_lost_worker_wait(resolver, heartbeat_timeout_s):
    """Configure TensorFlow's coordination service as MultiWorkerMirroredStrategy would (which then
    skips its own) with heartbeat_timeout_s: a peer silent that long is lost, collectives abort."""
    found = tf_coordination_service()
    if found is None:
        left_as_it_is("TensorFlow's coordination service",
                      "a lost worker is waited for as long as TensorFlow's default")
        return
    configure, coordinated_job, multi_worker_util = found
    spec = (resolver or tf.distribute.cluster_resolver.TFConfigClusterResolver()).cluster_spec()
    jobs = [coordinated_job(name=job, num_tasks=spec.num_tasks(job))
            for job in ("chief", "worker") if job in spec.jobs]
    configure(service_type="standalone", service_leader=multi_worker_util.coordination_leader(spec),
              coordinated_jobs=jobs, heartbeat_timeout_in_ms=heartbeat_timeout_s * 1000)


def work_around_keras_distribution_bugs(model, strategy):
    """Two Keras 3.15 bugs under tf.distribute, worked around on this model only
    (tests/test_distribute.py would fail if either came back):
    1. Before the first step, fit/evaluate/predict average the whole first distributed batch
       with strategy.reduce, which MultiWorkerMirroredStrategy rejects, and which fails under
       MirroredStrategy too whenever the replicas' shares of a batch differ in size (250 on 3
       devices, say). The model is already built from keras.Input; its loss and metrics only
       need the shapes, which one replica's local batch gives.
    2. Under MultiWorkerMirroredStrategy, each step's logs are averaged with
       strategy.reduce("MEAN", v, axis=0), which fails on scalars; with shape (1,) they average
       to the scalar mean across workers."""
    if strategy is None:
        return model
    keras_build = shaped(model, "_maybe_symbolic_build", ["iterator", "data_batch"])
    steps = [shaped(model, name, ["data"]) for name in ("train_step", "test_step")]
    if keras_build is None or None in steps:
        left_as_it_is("Keras' Model._maybe_symbolic_build(iterator, data_batch)",
                      "--distribute may fail at its first step (docs/distributed.md)")
        return model

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
