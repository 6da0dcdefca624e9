"""Do two versions of the project give the same outputs? Record four seeded runs with
one checkout, the same four with another, on the same machine, and compare them.

    python bench/same_outputs.py record DIR [--root CHECKOUT]   # the four runs into DIR
    python bench/same_outputs.py compare DIR_A DIR_B            # file by file

The runs, on synthetic KMNIST-shaped files in a --data-dir (never KMNIST):

  smoke     --epochs 3 --limit 2000 --seed 1            (the README's smoke run, seeded)
  compare   --compare --epochs 2 --limit 1000           (seed 1, --compare's own)
  resumed   --epochs 3 --limit 1000 --seed 2, stopped by SIGINT as the second epoch is
            logged (tests/stop_at.py, a point in Keras, not in the project), then run
            again: it resumes from the backup
  fast      --fast --precision bfloat16 --epochs 2 --limit 1000 --seed 3

`compare` says, per run and file: pictures byte for byte, history.json and
history.csv exactly, the model's weights (and Adam's state) array by array, run.json,
comparison.json with their timings left out (fields the second adds are named, not
counted as differences), the manifest without its dates.
--track-layer-inputs skips a point while its measurements would exceed their share of
the wall-clock time, so two runs of one version can measure at different steps: their
layer_inputs.json are compared at the steps both measured, and their layer_inputs.png
only where they measured at the same steps. Exit code 0 only if nothing differs.
"""
import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(HERE))
from testdata import synthetic  # noqa: E402

RUNS = {
    "smoke": ["--epochs", "3", "--limit", "2000", "--seed", "1"],
    "compare": ["--compare", "--epochs", "2", "--limit", "1000"],
    "resumed": ["--epochs", "3", "--limit", "1000", "--seed", "2"],
    "fast": ["--fast", "--precision", "bfloat16", "--epochs", "2", "--limit", "1000",
             "--seed", "3"],
}
STOP = ["SIGINT", "keras.callbacks.CSVLogger.on_epoch_end#2", "-"]
# What changes from run to run by itself: wall-clock and CPU times, dates.
# (and the Python object ids Keras writes into a model's config).
TIMINGS = {"shared_object_id", "training_seconds", "epoch_seconds", "epoch_cpu_seconds",
           "training_images_per_second", "evaluation_seconds", "seconds",
           "seconds_per_epoch", "seconds_to_val_accuracy", "wall_seconds", "started",
           "finished"}


def run(root, arguments, out, data, code=0, stop=False):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MPLBACKEND": "Agg"}
    prefix = [str(HERE / "tests" / "stop_at.py"), *STOP] if stop else []
    command = [sys.executable, *prefix, "model_batchnorm.py", *arguments,
               "--data-dir", str(data), "--output-dir", str(out), "--verbose", "2"]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True)
    if done.returncode != code:
        raise SystemExit(f"error: {' '.join(command[1:])} exited {done.returncode}, not "
                         f"{code}:\n{done.stderr[-2000:]}")
    return done.stdout


def record(folder, root):
    folder.mkdir(parents=True, exist_ok=True)
    # One path for the data in every recording: run.json records it.
    data = Path(tempfile.gettempdir()) / "same-outputs-data"
    shutil.rmtree(data, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="same-outputs-") as work:
        synthetic.write(synthetic.folder_paths(data), synthetic.make_arrays(
            2000, 400, **synthetic.BENCHMARK_DIFFICULTY))
        for name, arguments in RUNS.items():
            out = Path(work) / name
            if name == "resumed":
                run(root, arguments, out, data, code=130, stop=True)
            stdout = run(root, arguments, out, data)
            shutil.copytree(out, folder / name)
            (folder / f"{name}.stdout.txt").write_text(stdout)
            print(f"recorded {name}", file=sys.stderr)
    shutil.rmtree(data)


def without_timings(value):
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMINGS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def weights(path):
    """{name: bytes of each array} in a .keras file's weights, and its config."""
    import h5py
    with zipfile.ZipFile(path) as archive:
        config = without_timings(json.loads(archive.read("config.json")))
        arrays = {}
        with h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r") as h5:
            h5.visititems(lambda name, item: arrays.__setitem__(name, item[()].tobytes())
                          if isinstance(item, h5py.Dataset) else None)
    return config, arrays


def points(path):
    """{step: (p15, p50, p85)} of a layer_inputs.json."""
    track = json.loads(path.read_text())
    return dict(zip(track["steps"], zip(*(track[f"p{p}"] for p in track["percentiles"]))))


def same(a, b):
    """'same', 'DIFFERS', or for the layer-input tracks, whose points depend on the
    clock, 'same at the N steps both measured' and 'not compared' for their pictures
    where the runs measured at different steps."""
    if a.name == "layer_inputs.json":
        first, second = points(a), points(b)
        common = first.keys() & second.keys()
        if any(first[step] != second[step] for step in common):
            return "DIFFERS"
        return "same" if first == second else f"same at the {len(common)} steps both measured"
    if a.name == "layer_inputs.png" and a.read_bytes() != b.read_bytes():
        tracks = [sorted(points(path)) for path in (*a.parent.rglob("layer_inputs.json"),
                                                    *b.parent.rglob("layer_inputs.json"))]
        if len({tuple(steps) for steps in tracks}) > 1:
            return "not compared: the runs measured at different steps"
    if a.suffix == ".json":
        return same_json(without_timings(json.loads(a.read_text())),
                         without_timings(json.loads(b.read_text())))
    return "same" if same_outputs(a, b) else "DIFFERS"


def added_keys(old, new, path=""):
    """The keys of `new` that `old` lacks (dotted paths), and whether the rest is equal."""
    if isinstance(old, dict) and isinstance(new, dict):
        added, equal = [f"{path}{key}" for key in new if key not in old], set(old) <= set(new)
        for key in old:
            if key in new:
                more, alike = added_keys(old[key], new[key], f"{path}{key}.")
                added, equal = added + more, equal and alike
        return added, equal
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        results = [added_keys(o, n, path) for o, n in zip(old, new)]
        return sorted({k for more, _ in results for k in more}), all(e for _, e in results)
    return [], old == new


def same_json(old, new):
    """'same', 'DIFFERS', or 'same, and new fields: ...' where the second adds fields."""
    added, equal = added_keys(old, new)
    if not equal:
        return "DIFFERS"
    return f"same, and new fields: {', '.join(added)}" if added else "same"


def same_outputs(a, b):
    """A model's weights and config, or any other file's bytes."""
    if a.suffix == ".keras":
        return weights(a) == weights(b)
    return a.read_bytes() == b.read_bytes()


def compare(first, second):
    differ = 0
    for name in RUNS:
        files = {p.relative_to(first / name) for p in (first / name).rglob("*") if p.is_file()}
        others = {p.relative_to(second / name) for p in (second / name).rglob("*")
                  if p.is_file()}
        for only in sorted(files ^ others):
            print(f"{name}: {only} only in {first if only in files else second}")
            differ += 1
        for path in sorted(files & others):
            verdict = same(first / name / path, second / name / path)
            differ += verdict == "DIFFERS"
            print(f"{name}: {path}: {verdict}")
    print(f"{differ} difference(s)")
    return 1 if differ else 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("folder", type=Path)
    rec.add_argument("--root", type=Path, default=HERE, help="the checkout to run")
    cmp = sub.add_parser("compare")
    cmp.add_argument("first", type=Path)
    cmp.add_argument("second", type=Path)
    args = parser.parse_args(argv)
    if args.verb == "record":
        return record(args.folder.resolve(), args.root.resolve())
    return compare(args.first, args.second)


if __name__ == "__main__":
    sys.exit(main())
