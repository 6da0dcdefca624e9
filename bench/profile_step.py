"""Where a training step's time goes: one profiled epoch of `default` or `fast`,
TensorFlow's op events summed by kind of work, as shares of the profiled time.

    python bench/profile_step.py [--fast] [--images 12000] [--ops 12]

Uses TensorFlow's own profiler (tf.profiler.experimental) and reads its XSpace
protobuf back with the definitions TensorFlow ships. Synthetic data (never KMNIST).
"""
import argparse
import collections
import sys
import tempfile
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import machinery.quiet  # noqa: E402,F401
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

import model_batchnorm as mb  # noqa: E402
from machinery import fast  # noqa: E402
from testdata import synthetic  # noqa: E402

# Kinds of work, matched in order against an op's type (TensorFlow's oneDNN
# prefixes stripped); ops inside a BatchNormalization layer's name scope count as
# BatchNormalization whatever their type (Keras computes it from small ops).
KINDS = [
    ("convolution backward", ("Conv2DBackprop",)),
    ("convolution forward (with bias and ReLU)", ("Conv2D", "FusedConv2D")),
    ("pooling", ("MaxPool",)),
    ("dense (matmul, bias, ReLU)", ("MatMul", "FusedMatMul", "BiasAdd", "Relu")),
    ("optimizer update (Adam)", ("ResourceApplyAdam", "AssignSubVariableOp",
                                 "AssignAddVariableOp", "AssignVariableOp")),
    ("input pipeline", ("Iterator", "GatherV2", "Cast", "ExpandDims")),
]


def op_type(name):
    kind = name.rsplit(":", 1)[1]
    for prefix in ("_MklNative", "_Mkl", "_"):
        if kind.startswith(prefix):
            return kind[len(prefix):]
    return kind


def kind_of(name):
    scope = name.rsplit(":", 1)[0]
    if "batch_normalization" in scope:
        return ("BatchNormalization backward" if "gradient" in scope.lower()
                else "BatchNormalization forward")
    kind = op_type(name)
    for label, prefixes in KINDS:
        if any(kind.startswith(prefix) for prefix in prefixes):
            return label
    return "loss, metrics and other small ops"


def busy_seconds(intervals):
    """Seconds during which at least one op ran: the union of the ops' intervals."""
    busy, end = 0, None
    for start, stop in sorted(intervals):
        if end is None or start > end:
            busy, end = busy + stop - start, stop
        elif stop > end:
            busy, end = busy + stop - end, stop
    return busy / 1e12


def op_seconds(logdir):
    """({op event name: seconds}, seconds with at least one op running) from the profile."""
    path = next(Path(logdir).rglob("*.xplane.pb"))
    space = xplane_pb2.XSpace.FromString(path.read_bytes())
    totals, intervals = collections.Counter(), []
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        names = {key: meta.name for key, meta in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if ":" in name and "::" not in name and line.name.startswith("tf_Compute"):
                    totals[name] += event.duration_ps / 1e12  # TensorFlow ops: "scope:Type"
                    start = line.timestamp_ns * 1000 + event.offset_ps
                    intervals.append((start, start + event.duration_ps))
    return totals, busy_seconds(intervals)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true")
    parser.add_argument("--images", type=int, default=12_000)
    parser.add_argument("--policy", default=None, help="a Keras dtype policy to try, "
                        "e.g. mixed_bfloat16")
    parser.add_argument("--ops", type=int, default=0, metavar="N",
                        help="also list the N ops (layer and type) that took longest")
    args = parser.parse_args()
    if args.policy:
        tf.keras.mixed_precision.set_global_policy(args.policy)
    arrays = synthetic.make_arrays(args.images, 10, **synthetic.BENCHMARK_DIFFICULTY)
    x, y = arrays["train_imgs"], arrays["train_labels"]
    norm = fast.FusedBatchNormalization if args.fast else tf.keras.layers.BatchNormalization
    model = mb.compile_model(mb.build_model(mb.input_shape, 10, norm_layer=norm),
                             fast.STEPS_PER_EXECUTION if args.fast else 1)
    if args.fast:
        run = types.SimpleNamespace(batch_size=250, split_at=int(len(x) * 0.8),
                                    preprocess=mb.preprocess)  # as a run's settings hold them
        inputs = fast.fit_inputs(x, y, run)
    else:
        inputs = dict(x=mb.preprocess(x), y=y, batch_size=250, validation_split=0.2)
    model.fit(**inputs, epochs=1, verbose=0)  # trace and warm up
    with tempfile.TemporaryDirectory() as logdir:
        start = time.perf_counter()
        tf.profiler.experimental.start(logdir)
        model.fit(**inputs, epochs=1, verbose=0)
        tf.profiler.experimental.stop()
        wall = time.perf_counter() - start
        totals, busy = op_seconds(logdir)
    by_kind = collections.Counter()
    for name, seconds in totals.items():
        by_kind[kind_of(name)] += seconds
    whole = sum(by_kind.values())
    print(f"| kind of work ({'fast' if args.fast else 'default'}) | share of op time |")
    print("|---|---:|")
    for kind, seconds in by_kind.most_common():
        print(f"| {kind} | {seconds / whole:.1%} |")
    print(f"\nAn epoch of {wall:.2f} s: ops ran during {busy:.2f} s of it ({busy / wall:.0%}); "
          f"the rest ({1 - busy / wall:.0%}) is framework overhead between ops (Python, "
          f"callbacks, dispatch). Op time summed over threads: {whole:.2f} s.")
    if args.ops:
        print_top_ops(totals, whole, args.ops)
    return 0


def print_top_ops(totals, whole, count):
    """The ops that took longest, named by layer and type, every step's calls summed."""
    by_op = collections.Counter()
    for name, seconds in totals.items():
        scope, _ = name.rsplit(":", 1)
        layer = next((part for part in reversed(scope.split("/"))
                      if part.split("_")[0] in ("conv2d", "dense", "max", "batch", "fused")),
                     "other")
        by_op[f"{'gradient of ' if 'gradient' in scope else ''}{layer}: "
              f"{op_type(name)}"] += seconds
    print(f"\n| op (layer: type) | seconds | share of op time |\n|---|---:|---:|")
    for op, seconds in by_op.most_common(count):
        print(f"| {op} | {seconds:.3f} | {seconds / whole:.1%} |")


if __name__ == "__main__":
    sys.exit(main())
