"""--seed makes runs repeatable; --limit keeps the first images (README, "Flags" and
"Reproducibility")."""
import json
import subprocess
import sys

import numpy as np

import model_batchnorm as mb
from conftest import ROOT
from testdata import synthetic


def write_data(folder, train=600, test=200):
    arrays = synthetic.make_arrays(train=train, test=test)
    synthetic.write(synthetic.folder_paths(folder), arrays)
    return arrays


def test_limit_keeps_the_first_training_and_test_images(tmp_path, monkeypatch):
    arrays = write_data(tmp_path / "data", train=600, test=200)
    handed_to_training = []
    monkeypatch.setattr(mb, "train_and_test",
                        lambda run, data: handed_to_training.append(data))
    mb.main(["--limit", "150", "--data-dir", str(tmp_path / "data"),
             "--output-dir", str(tmp_path / "out")])
    (x_train, y_train), (x_test, y_test) = handed_to_training[0]
    np.testing.assert_array_equal(x_train, arrays["train_imgs"][:150])
    np.testing.assert_array_equal(y_train, arrays["train_labels"][:150])
    np.testing.assert_array_equal(x_test, arrays["test_imgs"][:150])
    np.testing.assert_array_equal(y_test, arrays["test_labels"][:150])


# Run in a fresh process: op determinism, once on, stays on for the whole process.
SEED_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import model_batchnorm as mb
from tensorflow.python.framework import config
common = ["--dry-run", "--data-dir", sys.argv[2], "--output-dir", sys.argv[3]]
mb.main(common)
print("unseeded", config.is_op_determinism_enabled())
mb.main(common + ["--seed", "7"])
print("seeded", config.is_op_determinism_enabled())
print("numpy", list(np.random.random(3)))
"""


def test_seed_turns_on_op_determinism_and_seeds_numpy_with_n(tmp_path):
    write_data(tmp_path / "data")
    done = subprocess.run(
        [sys.executable, "-c", SEED_PROBE, str(ROOT), str(tmp_path / "data"),
         str(tmp_path / "out")], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines()
             if line.startswith(("unseeded", "seeded", "numpy"))]
    # numpy's global generator right after keras.utils.set_random_seed(7), computed here.
    expected = list(np.random.RandomState(7).random_sample(3))
    assert lines == ["unseeded False", "seeded True", f"numpy {expected}"]


def start_training(data, out, seed):
    return subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), "--epochs", "2", "--limit", "300",
         "--batch-size", "80", "--seed", str(seed), "--no-plot", "--verbose", "0",
         "--data-dir", str(data), "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def test_same_seed_in_separate_processes_gives_identical_histories(tmp_path):
    write_data(tmp_path / "data")
    runs = {name: start_training(tmp_path / "data", tmp_path / name, seed)
            for name, seed in (("first", 5), ("again", 5), ("other", 6))}
    for name, process in runs.items():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    history = {name: json.loads((tmp_path / name / "history.json").read_text())
               for name in runs}
    assert len(history["first"]["loss"]) == 2
    assert history["first"] == history["again"]
    assert history["first"]["loss"] != history["other"]["loss"]
