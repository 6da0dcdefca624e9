"""Benchmark the ways this network can be trained, side by side, on this machine.

    python bench/benchmark.py                 # 3 repeats x 3 epochs of every variant
    python bench/benchmark.py --quick         # a one-minute look
    python bench/benchmark.py --variants default fast --repeats 5

Makes KMNIST-shaped synthetic data once (60,000 train / 10,000 test, uint8,
10 learnable classes; never KMNIST itself), then runs each variant in its own
subprocess, rotating the order every repetition so that the machine's noise
hits all variants alike. Prints one Markdown table of medians with each
variant's ratio to `default`, then the targets of README's "Speed" section.

Variants: `default` (python model_batchnorm.py, the faithful path), `fast`
(model_batchnorm.py --fast), `pytorch` and `pytorch-bf16` (bench/torch_peer.py,
which needs bench/requirements.txt).
"""
import argparse
import json
import multiprocessing
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from machinery import synthetic  # noqa: E402  (no TensorFlow: keeps this process small)

VARIANTS = {
    "default": [ROOT / "model_batchnorm.py"],
    "fast": [ROOT / "model_batchnorm.py", "--fast"],
    "pytorch": [ROOT / "bench" / "torch_peer.py"],
    "pytorch-bf16": [ROOT / "bench" / "torch_peer.py", "--bf16"],
}


def make_data(folder, train, test):
    """Write the synthetic data from a child process. A child's peak memory (ru_maxrss)
    starts from its parent's size when it was forked, even after exec: making 60,000
    images in this process would add its memory to every measurement."""
    child = multiprocessing.get_context("spawn").Process(
        target=synthetic.write_folder, args=(folder, train, test),
        kwargs=synthetic.BENCHMARK_DIFFICULTY)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"error: writing the synthetic data failed (exit {child.exitcode})")


def run_once(variant, data_dir, epochs, work):
    """Run one variant in a subprocess; returns its measurements."""
    out = work / f"{variant}-{time.monotonic_ns()}"
    command = [sys.executable, *map(str, VARIANTS[variant]), "--data-dir", str(data_dir),
               "--epochs", str(epochs), "--output-dir", str(out), "--no-plot", "--verbose", "0"]
    with open(work / "log.txt", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"error: {variant} failed (exit {process.returncode}); "
                         f"see the end of {work / 'log.txt'}")
    run = json.loads((out / "run.json").read_text())
    history = json.loads((out / "history.json").read_text())
    shutil.rmtree(out)
    later = run["epoch_seconds"][1:]  # the first epoch also builds and traces the graph
    return {
        "images_per_second": run["train_images"] / statistics.median(later),
        "seconds_per_epoch": statistics.median(later),
        "first_epoch_seconds": run["epoch_seconds"][0],
        "evaluation_seconds": run["evaluation_seconds"],
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "val_accuracy": history["val_accuracy"][-1],
        "test_accuracy": run["test_accuracy"],
        "versions": run["versions"],
    }


def medians(runs):
    keys = [k for k in runs[0] if k != "versions"]
    return {k: statistics.median(run[k] for run in runs) for k in keys}


def machine(versions):
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpu = listed.stdout.strip().replace("\n", "; ") or "none"
    merged = {}
    for v in versions:
        merged.update(v)
    return (f"{cpu}, {os.cpu_count()} cores, GPU: {gpu}, {platform.system()}; "
            + ", ".join(f"{k} {v}" for k, v in sorted(merged.items())))


def table(results):
    base = results.get("default")
    lines = ["| variant | images/s | × default | s/epoch | first epoch s | eval s "
             "| peak RSS MB | × default | val acc | test acc |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        speed = f"{m['images_per_second'] / base['images_per_second']:.2f}" if base else "-"
        memory = f"{m['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        lines.append(
            f"| {name} | {m['images_per_second']:,.0f} | {speed} | {m['seconds_per_epoch']:.2f} "
            f"| {m['first_epoch_seconds']:.2f} | {m['evaluation_seconds']:.2f} "
            f"| {m['peak_rss_mb']:,.0f} | {memory} | {m['val_accuracy']:.4f} "
            f"| {m['test_accuracy']:.4f} |")
    return "\n".join(lines)


TARGETS = [  # (what, numerator, denominator, measure, at least / at most, bound)
    ("fast images/s vs default", "fast", "default", "images_per_second", ">=", 2.0),
    ("fast peak memory vs default", "fast", "default", "peak_rss_mb", "<=", 0.6),
    ("default images/s vs pytorch float32", "default", "pytorch", "images_per_second", ">=", 0.9),
    ("fast images/s vs pytorch bf16", "fast", "pytorch-bf16", "images_per_second", ">=", 1.0),
]


def targets(results):
    lines = ["| target | measured | met |", "|---|---:|---|"]
    for what, top, bottom, key, sense, bound in TARGETS:
        if top in results and bottom in results:
            ratio = results[top][key] / results[bottom][key]
            met = ratio >= bound if sense == ">=" else ratio <= bound
            lines.append(f"| {what} {sense} {bound} | {ratio:.2f} | {'yes' if met else 'no'} |")
    if "fast" in results and "default" in results:
        gap = abs(results["fast"]["val_accuracy"] - results["default"]["val_accuracy"]) * 100
        lines.append(f"| fast val accuracy within 0.5 points of default | {gap:.2f} points "
                     f"| {'yes' if gap <= 0.5 else 'no'} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--train", type=int, default=60_000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=10_000, help="synthetic test images")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat of 2 epochs on 12,000/2,000 images")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.train, args.test = 2, 1, 12_000, 2_000
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    with tempfile.TemporaryDirectory(prefix="kmnist-bench-") as folder:
        work = Path(folder)
        make_data(work / "data", args.train, args.test)
        runs = {variant: [] for variant in args.variants}
        for repeat in range(args.repeats):
            order = args.variants[repeat % len(args.variants):] + \
                args.variants[:repeat % len(args.variants)]
            for variant in order:
                runs[variant].append(run_once(variant, work / "data", args.epochs, work))
                m = runs[variant][-1]
                print(f"repeat {repeat + 1}/{args.repeats} {variant}: "
                      f"{m['images_per_second']:,.0f} images/s, {m['peak_rss_mb']:,.0f} MB",
                      file=sys.stderr, flush=True)
    results = {variant: medians(r) for variant, r in runs.items()}
    print(f"Synthetic KMNIST-shaped data ({args.train:,} train / {args.test:,} test), "
          f"batch 250, {args.epochs} epochs, medians of {args.repeats} interleaved runs.\n")
    print(f"Machine: {machine(r[0]['versions'] for r in runs.values())}\n")
    print(table(results) + "\n")
    print(targets(results))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
