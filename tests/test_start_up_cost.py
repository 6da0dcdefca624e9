"""What a run does not pay for: --help and a bad flag answer before TensorFlow is
imported, the plotting helper imports matplotlib only to draw, fit traces its training
step once, and the diagnosis evaluates with the test function fit traced, not a second
one."""
import json
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf

import model_batchnorm as mb
from conftest import ROOT, settings_for
from machinery import batchnorm_stats, startup
from testdata import synthetic

HEAVY = ("tensorflow", "keras", "matplotlib")
# Runs the script as `python model_batchnorm.py ARGV...` does, then says which heavy
# packages were imported by the time it exited.
AS_A_COMMAND = """
import json, runpy, sys
sys.argv = ["model_batchnorm.py", *json.loads(sys.argv[1])]
try:
    runpy.run_path("model_batchnorm.py", run_name="__main__")
    code = 0
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "imported": [m for m in %r if m in sys.modules]}))
""" % (HEAVY,)


def as_a_command(*argv):
    done = subprocess.run([sys.executable, "-c", AS_A_COMMAND, json.dumps(argv)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    *printed, last = done.stdout.splitlines()
    return json.loads(last), "\n".join(printed), done.stderr


def test_help_answers_before_tensorflow_or_matplotlib_is_imported():
    result, printed, _ = as_a_command("--help")
    assert result == {"code": 0, "imported": []}
    assert "--epochs" in printed and "--output-dir" in printed


def test_bad_flag_is_one_line_before_tensorflow_is_imported():
    result, _, stderr = as_a_command("--epochs", "abc")
    assert result == {"code": 2, "imported": []}
    assert stderr.splitlines() == [
        "error: argument --epochs: expected a whole number above 0, got 'abc' (see --help)"]


def test_plot_history_imports_matplotlib_only_to_draw(tmp_path):
    code = ("import sys, plot_history\n"
            "print('matplotlib' in sys.modules)\n"
            f"plot_history.plot_history({{'loss': [2, 1], 'accuracy': [.5, .7]}}, "
            f"{str(tmp_path / 'h.png')!r})\n"
            "print('matplotlib' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.stdout.split() == ["False", "True"], done.stderr
    assert (tmp_path / "h.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def counting_test_steps(model):
    """Count the calls of model.test_step: Python runs it only while tracing."""
    calls, test_step = [], model.test_step

    def counted(data):
        calls.append(1)
        return test_step(data)

    model.test_step = counted
    return calls


def test_diagnosis_evaluates_with_the_test_function_fit_traced(capsys):
    arrays = synthetic.make_arrays(train=500, test=1, seed=2)
    images, labels = arrays["train_imgs"], arrays["train_labels"]
    model = mb.compile_model(mb.build_model((28, 28, 1), 10))
    traces = counting_test_steps(model)
    model.fit(mb.preprocess(images), labels, batch_size=50, epochs=1, verbose=0,
              validation_split=0.2)
    traced_by_fit = len(traces)
    assert traced_by_fit >= 1  # the count sees fit's validation
    run = settings_for(["--batch-size", 50], ((images, labels),) * 2)
    diagnosis = batchnorm_stats.diagnose(model, images, labels, run, 1)
    assert len(traces) == traced_by_fit
    # and it measures what fit's last validation measured, on the same 100 images
    expected_loss, expected_accuracy = model.evaluate(mb.preprocess(images[400:]),
                                                      labels[400:], batch_size=50, verbose=0)
    assert diagnosis["val_accuracy_moving_statistics"] == expected_accuracy
    assert np.isclose(diagnosis["val_loss_moving_statistics"], expected_loss, rtol=1e-6)


def test_fit_traces_the_training_step_once(tmp_path, keras_cache, monkeypatch):
    traced, train_step = [], keras.Sequential.train_step

    def counted(self, data):  # Python runs a step only while TensorFlow traces it
        traced.append(1)
        return train_step(self, data)

    monkeypatch.setattr(keras.Sequential, "train_step", counted)
    mb.main(["--epochs", "2", "--limit", "300", "--no-plot", "--verbose", "0",
             "--output-dir", str(tmp_path)])
    assert len(traced) == 1  # Keras alone traces it twice: it makes Adam's variables there


def fitted(prebuild, images, labels):
    keras.utils.set_random_seed(4)
    tf.config.experimental.enable_op_determinism()
    model = mb.compile_model(mb.build_model((28, 28, 1), 10))
    if prebuild:
        startup.built_for_fit(model, strategy=None)
    history = model.fit(mb.preprocess(images), labels, batch_size=50, epochs=2, verbose=0,
                        validation_split=0.2, shuffle=True)
    return history.history, [np.asarray(v) for v in model.weights + model.optimizer.variables]


def test_building_before_fit_changes_no_number():
    arrays = synthetic.make_arrays(train=300, test=1, seed=5)
    images, labels = arrays["train_imgs"], arrays["train_labels"]
    plain_history, plain_state = fitted(False, images, labels)
    history, state = fitted(True, images, labels)
    assert history == plain_history  # every epoch's loss and accuracy, to the last bit
    assert len(state) == len(plain_state)
    assert all(np.array_equal(a, b) for a, b in zip(state, plain_state))
