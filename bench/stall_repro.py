"""A minimal reproduction of tf.data's stall between epochs, for a TensorFlow maintainer.

Plain TensorFlow and Keras (project code only in --input arrays-no-autotune): a small CNN, random 28x28 images, batch
250, model.fit for a few epochs. A sampler thread reads the process's CPU time and
run-queue wait (/proc, bench/cpu_sampler.py) every 0.1 s; each epoch prints its wall
and CPU seconds and its longest stretch with the process under a tenth of a core
while not waiting for one. With --stack, the first stretch that lasts 0.5 s has its
native stacks dumped by py-spy (`py-spy dump --native`; pip install py-spy, and
ptrace must be allowed).

    python bench/stall_repro.py --input arrays        # fit(x, y, validation_split=0.2)
    python bench/stall_repro.py --input dataset       # tf.data, a new iterator each epoch
    python bench/stall_repro.py --input no-autotune   # the same, autotune off
    python bench/stall_repro.py --input repeat        # one iterator for the whole run
    python bench/stall_repro.py --input arrays-no-autotune   # arrays, Keras' pipeline
                                   # without autotuning (machinery/keras_internals.py)

What it showed is in bench/records/2026-11-29-speed.md ("The stall between epochs").
"""
import argparse
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from cpu_sampler import IDLE_SHARE, idle_stretches, longest_between, read  # noqa: E402


class Sampler(threading.Thread):
    """(wall, process CPU) every `period` seconds; optionally dumps the stacks once."""

    def __init__(self, period=0.1, stack_after=None):
        super().__init__(daemon=True)
        self.period, self.stack_after, self.samples, self.stack = period, stack_after, [], None

    def run(self):
        while True:
            self.samples.append((time.perf_counter(), *read()))
            if self.stack_after and self.stack is None:
                stretches = idle_stretches(self.samples[-50:])
                if stretches and stretches[-1][1] >= self.stack_after and \
                        stretches[-1][0] + stretches[-1][1] >= self.samples[-2][0]:
                    self.stack = subprocess.run(
                        [shutil.which("py-spy") or "py-spy", "dump", "--native",
                         "--pid", str(os.getpid())], capture_output=True, text=True).stdout
            time.sleep(self.period)


class EpochTimes(keras.callbacks.Callback):
    def __init__(self, sampler):
        super().__init__()
        self.sampler = sampler

    def on_epoch_begin(self, epoch, logs=None):
        self.start = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        wall, cpu = (time.perf_counter() - self.start[0], time.process_time() - self.start[1])
        longest = longest_between(self.sampler.samples, self.start[0], time.perf_counter())
        print(f"epoch {epoch + 1}: wall {wall:.2f} s, cpu {cpu:.2f} s "
              f"({cpu / wall:.2f} cores), longest stretch under {IDLE_SHARE} core "
              f"{longest:.2f} s", flush=True)


def pipeline(x, y, batch, autotune=True, repeat=False, shuffle=True):
    data = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        data = data.shuffle(len(x), reshuffle_each_iteration=True)
    data = data.batch(batch)
    if repeat:
        data = data.repeat()
    data = data.map(lambda a, b: (tf.cast(a, tf.float32) / 255, b),
                    num_parallel_calls=tf.data.AUTOTUNE if autotune else 2)
    data = data.prefetch(tf.data.AUTOTUNE if autotune else 2)
    if not autotune:
        options = tf.data.Options()
        options.autotune.enabled = False
        data = data.with_options(options)
    return data


def fit_arguments(kind, x, y, batch):
    split = int(len(x) * 0.8)
    if kind == "arrays-no-autotune":
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from machinery import keras_internals
        keras_internals.array_pipelines_without_autotuning()
    if kind.startswith("arrays"):
        return dict(x=x.astype("float32") / 255, y=y, batch_size=batch, validation_split=0.2)
    autotune, repeat = kind != "no-autotune", kind == "repeat"
    arguments = dict(x=pipeline(x[:split], y[:split], batch, autotune, repeat),
                     validation_data=pipeline(x[split:], y[split:], batch, autotune,
                                              repeat, shuffle=False), shuffle=False)
    if repeat:
        arguments.update(steps_per_epoch=-(-split // batch),
                         validation_steps=-(-(len(x) - split) // batch))
    return arguments


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", choices=("arrays", "arrays-no-autotune", "dataset", "no-autotune",
                                             "repeat"),
                        default="dataset")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=15_000)
    parser.add_argument("--stack", action="store_true", help="dump the first stall's stacks")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, args.images).astype("int32")
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    sampler = Sampler(stack_after=0.5 if args.stack else None)
    sampler.start()
    print(f"tensorflow {tf.__version__}, keras {keras.__version__}, input {args.input}, "
          f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}", flush=True)
    model.fit(**fit_arguments(args.input, x, y, 250), epochs=args.epochs, verbose=0,
              callbacks=[EpochTimes(sampler)])
    if sampler.stack:
        print("Stacks during the first stall:\n" + sampler.stack)
    return 0


if __name__ == "__main__":
    sys.exit(main())
