"""model_batchnorm.py with TensorFlow's thread pools set, for bench/benchmark.py's
thread variants (bench/records/2026-11-29-speed.md, "Thread settings"): a setting moves into the
product only where the benchmark shows a gain.

    python bench/threads.py --inter 1 [--intra N] [--tf-data-threads N] -- --fast ...
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import model_batchnorm  # noqa: E402
from machinery import cli, fast  # noqa: E402
from machinery.quiet import tf  # noqa: E402


def with_private_pool(make_batches, threads):
    """fast.uint8_batches whose pipelines run in a private pool of `threads` threads."""
    def batches(*args, **kwargs):
        options = tf.data.Options()
        options.threading.private_threadpool_size = threads
        return make_batches(*args, **kwargs).with_options(options)
    return batches


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inter", type=int, default=0, help="inter-op threads (0: TF's)")
    parser.add_argument("--intra", type=int, default=0, help="intra-op threads (0: TF's)")
    parser.add_argument("--tf-data-threads", type=int, default=0,
                        help="a private tf.data pool of this size for --fast (0: shared)")
    args, rest = parser.parse_known_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(args.inter)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra)
    if args.tf_data_threads:
        fast.uint8_batches = with_private_pool(fast.uint8_batches, args.tf_data_threads)
    return cli.run(model_batchnorm.main, [a for a in rest if a != "--"])


if __name__ == "__main__":
    sys.exit(main())
