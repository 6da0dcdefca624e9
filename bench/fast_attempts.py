"""Ways to make --fast's float32 step faster, each measured against --fast as it is.

    python bench/fast_attempts.py                       # every attempt, 3 rounds
    python bench/fast_attempts.py --attempts fast xla --rounds 2 --epochs 4

Each attempt trains the lesson's network with --fast's pieces (FusedBatchNormalization,
the uint8 tf.data pipeline, 16 steps per call) on 12,000 synthetic KMNIST-shaped images
(never KMNIST), batch 250, in its own process; the attempts take turns, in a new order
every round, and every epoch after the first prints its wall and CPU seconds. The attempts:

  fast             --fast as it is: the baseline
  xla              the same, compiled by XLA (jit_compile=True)
  eigen            TensorFlow's own Eigen kernels instead of oneDNN (TF_ENABLE_ONEDNN_OPTS=0)
  conv1-matmul     the first convolution (1 input channel) as 9 shifted slices and a matmul
  conv1-filter-matmul   only its kernel gradient so, the forward pass left to oneDNN
  conv2-input-as-forward  the second convolution's input gradient as a forward
                   convolution of the padded gradient with the flipped kernel
  steps-64         64 steps per call instead of 16 (a whole epoch per call)

What they gave is in bench/records/2026-11-29-speed.md ("Attempts, each measured").
"""
import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ATTEMPTS = ("fast", "xla", "eigen", "conv1-matmul", "conv1-filter-matmul",
            "conv2-input-as-forward", "steps-64")


def patches(x, kh, kw):
    """(N, H, W, C) -> (N*H'*W', kh*kw*C): the 3x3 neighbourhoods as rows, from slices."""
    import tensorflow as tf
    height, width = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    rows = tf.concat([x[:, i:i + height, j:j + width, :] for i in range(kh)
                      for j in range(kw)], axis=-1)
    return tf.reshape(rows, (-1, kh * kw * x.shape[-1]))


def convolution(attempt):
    """conv(x, kernel) with the attempt's own gradient (tf.custom_gradient)."""
    import tensorflow as tf

    @tf.custom_gradient
    def conv(x, kernel):
        def gradient(g):
            kh, kw, _, filters = kernel.shape
            if attempt == "conv1-filter-matmul":
                flat = tf.reshape(g, (-1, filters))
                return None, tf.reshape(tf.matmul(patches(x, kh, kw), flat,
                                                  transpose_a=True), kernel.shape)
            padded = tf.pad(g, [[0, 0], [kh - 1, kh - 1], [kw - 1, kw - 1], [0, 0]])
            flipped = tf.transpose(tf.reverse(kernel, [0, 1]), [0, 1, 3, 2])
            return (tf.nn.conv2d(padded, flipped, 1, "VALID"),
                    tf.raw_ops.Conv2DBackpropFilter(
                        input=x, filter_sizes=tf.shape(kernel), out_backprop=g,
                        strides=[1, 1, 1, 1], padding="VALID"))
        return tf.nn.conv2d(x, kernel, 1, "VALID"), gradient
    return conv


def with_attempt(model, attempt, keras, tf):
    """The model with its first or second convolution computed the attempt's way."""
    index = 0 if attempt.startswith("conv1") else 4
    conv = convolution(attempt)

    class Attempted(keras.layers.Conv2D):
        def call(self, inputs):
            kh, kw, _, filters = self.kernel.shape
            if attempt == "conv1-matmul":
                y = tf.matmul(patches(inputs, kh, kw), tf.reshape(self.kernel, (-1, filters)))
                y = tf.reshape(y, (-1, inputs.shape[1] - kh + 1, inputs.shape[2] - kw + 1,
                                   filters))
            else:
                y = conv(inputs, tf.convert_to_tensor(self.kernel))
            return tf.nn.relu(tf.nn.bias_add(y, self.bias))

    layers = list(model.layers)
    layers[index] = Attempted.from_config(layers[index].get_config())
    attempted = keras.Sequential([keras.Input(model.inputs[0].shape[1:]), *layers])
    attempted.set_weights(model.get_weights())  # the same network, the same weights
    return attempted


def train(attempt, epochs):
    """One attempt in this process: prints 'epoch N wall CPU' for every epoch."""
    sys.path.insert(0, str(ROOT))
    import machinery.quiet  # noqa: F401
    import model_batchnorm as mb
    from machinery import fast
    from machinery.quiet import keras, tf
    from testdata import synthetic
    arrays = synthetic.make_arrays(12_000, 10, **synthetic.BENCHMARK_DIFFICULTY)
    keras.utils.set_random_seed(1)
    model = mb.build_model(mb.input_shape, 10, norm_layer=fast.FusedBatchNormalization)
    if attempt.startswith("conv"):
        model = with_attempt(model, attempt, keras, tf)
    model.compile(loss=keras.losses.sparse_categorical_crossentropy,
                  optimizer=keras.optimizers.Adam(), metrics=["accuracy"],
                  steps_per_execution=64 if attempt == "steps-64" else fast.STEPS_PER_EXECUTION,
                  jit_compile=attempt == "xla")
    clock = {}
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: clock.update(wall=time.perf_counter(),
                                                        cpu=time.process_time()),
        on_epoch_end=lambda epoch, logs: print(
            f"epoch {epoch + 1} {time.perf_counter() - clock['wall']:.3f} "
            f"{time.process_time() - clock['cpu']:.3f}", flush=True))
    x = arrays["train_imgs"]  # the lesson's batch and split, as a run's settings hold them
    run = types.SimpleNamespace(batch_size=250, split_at=int(len(x) * 0.8),
                                preprocess=mb.preprocess)
    model.fit(**fast.fit_inputs(x, arrays["train_labels"], run),
              epochs=epochs, verbose=0, callbacks=[timer])


def run(attempt, epochs):
    """[(wall, cpu)] of every epoch after the first, from a fresh process."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0" if attempt == "eigen" else "1")
    done = subprocess.run([sys.executable, __file__, "--train", attempt, "--epochs",
                           str(epochs)], capture_output=True, text=True, env=env, check=True)
    rows = [line.split() for line in done.stdout.splitlines() if line.startswith("epoch ")]
    return [(float(wall), float(cpu)) for _, _, wall, cpu in rows[1:]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--attempts", nargs="+", choices=ATTEMPTS, default=list(ATTEMPTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4, help="the first is not timed")
    parser.add_argument("--train", choices=ATTEMPTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train:
        return train(args.train, args.epochs)
    print(f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average "
          f"{os.getloadavg()[0]:.2f}; epochs after the first, wall s / CPU s")
    print("| attempt | round | epochs |\n|---|---:|---|")
    for round_number in range(1, args.rounds + 1):
        turn = (round_number - 1) % len(args.attempts)  # a new order every round
        for attempt in args.attempts[turn:] + args.attempts[:turn]:
            epochs = run(attempt, args.epochs)
            cells = ", ".join(f"{wall:.2f}/{cpu:.2f}" for wall, cpu in epochs)
            print(f"| {attempt} | {round_number} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
