"""The README's smoke run against its floor, as whole processes, on this machine.

    python bench/smoke.py                  # 5 interleaved repeats, then a py-spy profile
    python bench/smoke.py --repeats 3 --no-profile

Writes KMNIST-shaped synthetic files (never KMNIST itself; 60,000/10,000 images,
as many as the real files hold) into a temporary Keras cache, where
extra-keras-datasets finds them. Each repeat then runs, in an order rotated from
repeat to repeat so that the machine's noise hits all alike, and seeded with the
repeat's number:

  smoke       python model_batchnorm.py --epochs 3 --limit 2000 --output-dir OUT --seed R
              (the README's smoke run, every output: the files are checked)
  floor       python bench/floor.py: the same training in the fewest lines Keras allows
  --help      python model_batchnorm.py --help
  bad flag    python model_batchnorm.py --epochs abc (must exit 2)

and prints every repeat (wall and CPU seconds) with the smoke run's ratio to the
floor, the targets judged in every repeat (smoke at most 1.3x the floor; --help and
the bad flag under 1.5 s), the machine, the date, the versions, the load and the
command. `--also LABEL=CHECKOUT` adds the same smoke run of another checkout (another
version of the project, say) to every repeat, interleaved with the others and judged
against the same floor: two versions measured side by side. Last, one
more smoke run under py-spy (bench/requirements.txt; --py-spy PATH) says where its
seconds go, phase by phase (phases.py).
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
import benchmark  # noqa: E402  (the machine line; no TensorFlow in this process)
import phases  # noqa: E402
from testdata import synthetic  # noqa: E402

MODEL = ROOT / "model_batchnorm.py"
FLOOR = ROOT / "bench" / "floor.py"
SMOKE_FLAGS = ["--epochs", "3", "--limit", "2000"]
# The README's smoke run writes all of these (every output).
SMOKE_OUTPUTS = ("history.json", "history.csv", "model.keras", "run.json",
                 "training_history.png", "predictions.png", "confusion_matrix.png",
                 "batchnorm_statistics.png")
SMOKE_TARGET = 1.3  # at most this many times the floor's seconds, in every repeat
ANSWER_TARGET = 1.5  # seconds for --help and a bad flag, in every repeat
VARIANTS = ("smoke", "floor", "--help", "bad flag")


def smoke_command(checkout, out, seed):
    return [sys.executable, str(checkout / "model_batchnorm.py"), *SMOKE_FLAGS,
            "--output-dir", str(out), "--seed", str(seed)]


def commands(cache, out, seed, also=None):
    """{variant: (command, expected exit code)}; `also`: {label: checkout} of more smoke
    runs, each writing beside `out`."""
    python, files = sys.executable, synthetic.cache_paths(cache).values()
    return {
        "smoke": (smoke_command(ROOT, out, seed), 0),
        **{label: (smoke_command(checkout, out.with_name(f"{out.name}-{label}"), seed), 0)
           for label, checkout in (also or {}).items()},
        "floor": ([python, str(FLOOR), *map(str, files), "2000", "3", str(seed)], 0),
        "--help": ([python, str(MODEL), "--help"], 0),
        "bad flag": ([python, str(MODEL), "--epochs", "abc"], 2),
    }


def environment(cache):
    """A private Keras cache, and no network: a download attempt fails at once."""
    proxy = "http://127.0.0.1:9"
    return {**os.environ, "KERAS_HOME": str(cache), "MPLBACKEND": "Agg",
            "http_proxy": proxy, "https_proxy": proxy, "HTTP_PROXY": proxy,
            "HTTPS_PROXY": proxy}


def timed(command, code, env, log):
    """Whole-process (wall, CPU) seconds of `command`, which must exit with `code`. CPU
    (user + system) is what another job on the machine inflates least."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, stdout=log, stderr=log, cwd=ROOT, env=env)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != code:
        raise SystemExit(f"error: {' '.join(command[1:3])} exited {done.returncode}, "
                         f"not {code}: see the end of {log.name}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def check_outputs(out):
    missing = [name for name in SMOKE_OUTPUTS if not (out / name).exists()]
    if missing:
        raise SystemExit(f"error: the smoke run wrote no {', '.join(missing)} in {out}")
    return json.loads((out / "run.json").read_text())["versions"]


def variants(smokes=("smoke",)):
    return (smokes[0], *smokes[1:], *VARIANTS[1:])


def order_of(repeat, names):
    """The variants in the order of this repeat: rotated by one each repeat."""
    shift = repeat % len(names)
    return names[shift:] + names[:shift]


def measure(repeats, cache, work, env, also=None):
    """[{variant: seconds, 'load': ..., 'versions': ...}] per repeat, interleaved."""
    rows, names = [], variants(("smoke", *(also or {})))
    with open(work / "log.txt", "a") as log:
        for repeat in range(repeats):
            out = work / f"smoke-{repeat + 1}"
            todo = commands(cache, out, repeat + 1, also)
            row = {"load": os.getloadavg()[0]}
            for variant in order_of(repeat, names):
                row[variant], row[f"{variant} cpu"] = timed(*todo[variant], env, log)
            for label in ("", *(f"-{label}" for label in also or {})):
                row["versions"] = check_outputs(out.with_name(out.name + label))
                shutil.rmtree(out.with_name(out.name + label))
            rows.append(row)
            print(f"repeat {repeat + 1}/{repeats}: " + ", ".join(
                f"{v} {row[v]:.2f} s" for v in names) + f", load {row['load']:.2f}",
                file=sys.stderr, flush=True)
    return rows


def repeats_table(rows, smokes=("smoke",)):
    """Every repeat: wall seconds (CPU seconds) of each variant, each smoke run's ratio
    to the floor in both, and the load; then the medians."""
    names = variants(smokes)
    lines = ["| repeat | order | " + " | ".join(f"{s} s (CPU)" for s in smokes)
             + " | floor s (CPU) | " + " | ".join(f"{s} / floor (CPU)" for s in smokes)
             + " | --help s | bad flag s | load (1 min) |",
             "|---:|---|" + "---:|" * (2 * len(smokes) + 4)]

    def line(first, second, row, ratio):
        return (f"| {first} | {second} | "
                + " | ".join(f"{row[s]:.2f} ({row[s + ' cpu']:.1f})" for s in smokes)
                + f" | {row['floor']:.2f} ({row['floor cpu']:.1f}) | "
                + " | ".join(f"{ratio(s, ''):.2f} ({ratio(s, ' cpu'):.2f})" for s in smokes)
                + f" | {row['--help']:.2f} | {row['bad flag']:.2f} | {row['load']:.2f} |")

    for i, row in enumerate(rows):
        lines.append(line(i + 1, ", ".join(order_of(i, names)), row,
                          lambda s, c, r=row: r[s + c] / r["floor" + c]))
    median = {key: statistics.median(row[key] for row in rows) for key in rows[0]
              if key not in ("versions",)}
    lines.append(line("median", "-", median, lambda s, c: statistics.median(
        r[s + c] / r["floor" + c] for r in rows)))
    return "\n".join(lines)


def verdicts(rows, smokes=("smoke",)):
    """Each target, met or missed, judged in every repeat."""
    lines = []
    for smoke in smokes:
        worst = max(row[smoke] / row["floor"] for row in rows)
        lines.append(f"{smoke} / floor at most {SMOKE_TARGET} in every repeat: "
                     f"{'met' if worst <= SMOKE_TARGET else 'MISSED'} (worst {worst:.2f})")
    for variant in ("--help", "bad flag"):
        worst = max(row[variant] for row in rows)
        lines.append(f"{variant} under {ANSWER_TARGET} s in every repeat: "
                     f"{'met' if worst < ANSWER_TARGET else 'MISSED'} (worst {worst:.2f} s)")
    return "\n".join(lines)


def profile(py_spy, cache, work, env):
    """One more smoke run under py-spy (40 samples a second, idle included): its
    phase table."""
    raw = work / "profile.txt"
    command, _ = commands(cache, work / "profiled", seed=1)["smoke"]
    with open(work / "log.txt", "a") as log:
        done = subprocess.run([str(py_spy), "record", "--rate", "40", "--idle", "--threads",
                               "--format", "raw", "--output", str(raw), "--", *command],
                              stdout=log, stderr=log, cwd=ROOT, env=env)
    if done.returncode != 0 or not raw.exists():
        return f"(no profile: py-spy exited {done.returncode}; see {work / 'log.txt'})"
    return phases.table(phases.seconds_per_phase(raw.read_text(), rate=40))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy run")
    parser.add_argument("--py-spy", type=Path, default=shutil.which("py-spy"),
                        help="the py-spy executable (default: the one on PATH)")
    parser.add_argument("--also", action="append", default=[], metavar="LABEL=CHECKOUT",
                        help="also the smoke run of another checkout, in every repeat")
    args = parser.parse_args(argv)
    args.also = dict(item.split("=", 1) for item in args.also)
    args.also = {label: Path(checkout).resolve() for label, checkout in args.also.items()}
    return args


def main(argv=None):
    args = parse_args(argv)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory(prefix="kmnist-smoke-bench-") as folder:
        work, cache = Path(folder), Path(folder) / "keras-home"
        synthetic.write(synthetic.cache_paths(cache), synthetic.make_arrays(60_000, 10_000))
        env = environment(cache)
        rows = measure(args.repeats, cache, work, env, args.also)
        smokes = ("smoke", *args.also)
        loads = [row["load"] for row in rows]
        print(f"Machine: {benchmark.machine([rows[0]['versions']])}\n"
              f"Date: {started}; command: python bench/smoke.py {' '.join(sys.argv[1:])}\n"
              f"Load average (1 min) at each repeat's start: {min(loads):.2f} to "
              f"{max(loads):.2f} on {os.cpu_count()} cores\n"
              "Synthetic KMNIST-shaped files (60,000/10,000 images) in a temporary Keras "
              f"cache; smoke: model_batchnorm.py {' '.join(SMOKE_FLAGS)} --seed R"
              + "".join(f"; {label}: the same in {checkout}"
                        for label, checkout in args.also.items())
              + f"; {args.repeats} interleaved repeats, whole-process wall seconds.\n")
        print(repeats_table(rows, smokes) + "\n\n" + verdicts(rows, smokes) + "\n",
              flush=True)
        if not args.no_profile:
            if args.py_spy is None:
                print("(no profile: py-spy is not on PATH; pip install -r bench/requirements.txt)")
            else:
                print(profile(args.py_spy, cache, work, env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
