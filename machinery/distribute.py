"""--distribute: training under tf.distribute on several devices or machines (docs/distributed.md).

What it needs of Keras' and TensorFlow's internals (a workaround for two Keras bugs under
tf.distribute, the coordination service's heartbeat) lives in keras_internals.py."""
import contextlib
import json
import os
import re

from machinery import signals
from machinery.errors import ScriptError
from machinery.keras_internals import (  # noqa: F401  (model_batchnorm.py calls it here)
    bound_lost_worker_wait, work_around_keras_distribution_bugs)
from machinery.quiet import tf

# A worker whose peers hear no heartbeat from it for HEARTBEAT_TIMEOUT_S is lost: every
# collective is aborted. Its peers stop within about LOST_WORKER_BOUND_S of its end (the
# timeout, then the step under way and their own exit; measured in docs/distributed.md).
HEARTBEAT_TIMEOUT_S = 10
LOST_WORKER_BOUND_S = 30
# Below this many images per replica, BatchNormalization's batch statistics get noisy
# (Wu & He 2018, Group Normalization, Fig. 1): a note suggests --sync-bn.
SMALL_SHARE = 16
TF_CONFIG_FORM = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                  '"task": {"type": "worker", "index": 0}}')
RERUN = "start every worker again with the same command: they resume from their backups"


def slurm_resolver(port):
    """The cluster of a Slurm job step (srun), one task per worker, task k of a node on
    port+k. With GPUs, one task per node, which trains on all of its node's GPUs."""
    if "SLURM_PROCID" not in os.environ:
        raise ScriptError("under Slurm, start every worker with srun (SLURM_PROCID is not "
                          "set): see docs/distributed.md")
    resolvers = tf.distribute.cluster_resolver
    try:
        per_node = max(int(n) for n in re.findall(
            r"\d+", re.sub(r"\(x\d+\)", "", os.environ["SLURM_STEP_TASKS_PER_NODE"])))
        gpus = len(tf.config.list_physical_devices("GPU"))
        if gpus and per_node > 1:
            raise ScriptError("with GPUs, start one Slurm task per node (--ntasks-per-node=1"
                              "): each trains on all of its node's GPUs")
        # auto_set_gpu off: TensorFlow has seen the devices already; without GPUs the
        # resolver still wants a device slot per task.
        resolver = resolvers.SlurmClusterResolver(
            port_base=port, gpus_per_node=gpus or per_node, gpus_per_task=gpus or 1,
            auto_set_gpu=False)
        resolver.cluster_spec()  # sets task_type and task_id
    except (KeyError, RuntimeError, ValueError) as err:
        raise ScriptError(f"cannot read the Slurm job step's cluster ({err}): start the "
                          "workers with srun, see docs/distributed.md") from None
    return resolver


def cluster_resolver(port):
    """TF_CONFIG if set (by hand, or by Kubernetes' TFJob), else the Slurm job's cluster."""
    if "TF_CONFIG" not in os.environ and "SLURM_JOB_ID" in os.environ:
        return slurm_resolver(port)
    try:
        config = json.loads(os.environ["TF_CONFIG"])
    except KeyError:
        raise ScriptError("--distribute multiworker needs the cluster in the TF_CONFIG "
                          "environment variable, or a Slurm job: see docs/distributed.md") \
            from None
    except ValueError as err:
        raise ScriptError(f"TF_CONFIG is not valid JSON ({err}): see docs/distributed.md") from None
    problem = tf_config_problem(config)
    if problem:
        raise ScriptError(f"TF_CONFIG is JSON but not a cluster ({problem}): set it as "
                          f"{TF_CONFIG_FORM}, see docs/distributed.md")
    return None  # MultiWorkerMirroredStrategy reads TF_CONFIG itself


def tf_config_problem(config):
    """What makes parsed TF_CONFIG JSON unusable as a cluster (TensorFlow would stop with
    a traceback), or None: a "cluster" of task types, each with a list of "host:port"
    addresses, and a "task" naming one of them by type and index."""
    if not isinstance(config, dict):
        return f"a JSON {type(config).__name__}, not an object"
    cluster, task = config.get("cluster"), config.get("task")
    if not (isinstance(cluster, dict) and cluster and all(
            isinstance(addresses, list) and addresses
            and all(isinstance(a, str) for a in addresses) for addresses in cluster.values())):
        return '"cluster" must map each task type to a list of "host:port" addresses'
    if not isinstance(task, dict) or task.get("type") not in cluster:
        return f'"task" must name a "type" of the cluster ({", ".join(cluster)})'
    index, count = task.get("index"), len(cluster[task["type"]])
    if type(index) is not int or not 0 <= index < count:
        return f'"task" "index" must be a whole number from 0 to {count - 1}, got {index!r}'
    return None


def make_strategy(name, cpu_devices=2, slurm_port=8888):
    """The tf.distribute strategy for --distribute, or None. Must run before
    TensorFlow starts its devices, so it runs first."""
    if name is None:
        return None
    if name == "multiworker":
        resolver = cluster_resolver(slurm_port)
        bound_lost_worker_wait(resolver, HEARTBEAT_TIMEOUT_S)
        # SIGTERM stays cli.py's, which stops the run as Ctrl-C does.
        with signals.sigterm_handler_kept():
            return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    if tf.config.list_physical_devices("GPU"):
        return tf.distribute.MirroredStrategy()
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * cpu_devices)
    return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])


def is_multiworker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def task_name(strategy):
    """'worker 1' or 'chief 0': how errors and folders name this process."""
    resolver = strategy.cluster_resolver
    return f"{resolver.task_type} {resolver.task_id}"


def is_chief(strategy):
    """Only one process writes the output folder: the chief, or worker 0 if none is named."""
    if not is_multiworker(strategy):
        return True
    resolver = strategy.cluster_resolver
    return (resolver.task_type in (None, "chief")
            or (resolver.task_type == "worker" and resolver.task_id == 0
                and "chief" not in resolver.cluster_spec().as_dict()))


def note_small_shares(batch_size, sync_bn, strategy):
    """One line when each replica normalises fewer than SMALL_SHARE images of a batch of
    `batch_size` and --sync-bn is off."""
    replicas = strategy.num_replicas_in_sync if strategy else 1
    share = batch_size // replicas
    if replicas > 1 and share < SMALL_SHARE and not sync_bn:
        print(f"Note: each of the {replicas} replicas normalises only {share} images per step "
              f"(under {SMALL_SHARE}, BatchNormalization's statistics get noisy): add "
              "--sync-bn, or a larger --batch-size (docs/distributed.md).")


def gather_from_workers(strategy, values):
    """Every worker's `values` (a list of ints), one row per worker, in task order: a
    collective, so every worker must call it at the same point."""
    local = tf.constant([values], tf.int64)

    @tf.function
    def gather():
        return tf.distribute.get_replica_context().all_gather(local, axis=0)

    results = strategy.experimental_local_results(strategy.run(gather))
    return results[0].numpy()[::len(results)].tolist()  # each local replica gave a row


LOST = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")
COLLECTIVE_FAULTS = ("UnavailableError", "DeadlineExceededError", "AbortedError",
                     "CancelledError")


def lost_worker(err, strategy):
    """The one-line ScriptError for a collective that failed because a peer is gone (gRPC
    connection reset, health check gave up), or None: anything else is a bug to show in full."""
    if not (is_multiworker(strategy) and isinstance(err, tf.errors.OpError)):
        return None
    message = str(err)
    if not (type(err).__name__ in COLLECTIVE_FAULTS or "ollective" in message
            or "Connection reset" in message or "Socket closed" in message):
        return None
    peers = [f"{kind} {index}" for kind, index in LOST.findall(message)
             if f"{kind} {index}" != task_name(strategy)]
    who = peers[0] if peers else "another worker"
    return ScriptError(f"lost contact with {who} ({type(err).__name__}): {RERUN}")


def scope(strategy):
    """Where the model must be built: the strategy's scope, or nowhere special."""
    return strategy.scope() if strategy else contextlib.nullcontext()


def norm_options(run):
    """--sync-bn: the BatchNormalization layers share their batch statistics across replicas."""
    return {"synchronized": True} if run.sync_bn else {}
