"""--precision bfloat16 (docs/speed.md): native hardware only, part of the resume key,
saved in float32, as accurate as float32 on real handwriting; and the per-epoch CPU
seconds beside the wall seconds."""
import json
import statistics

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import settings_for
from machinery import callbacks, fast, resume
from testdata import mnist_digits

NOTE = "Note: --precision bfloat16 needs native bfloat16"


def test_bfloat16_without_native_hardware_runs_float32_with_one_note(
        monkeypatch, capsys, data_dir, tmp_path):
    monkeypatch.setattr(fast, "cpu_flags", lambda: {"avx2", "avx512f", "fma"})
    result = mb.main(["--precision", "bfloat16", "--dry-run", "--data-dir", str(data_dir),
                      "--output-dir", str(tmp_path / "out")])
    assert result["dry_run"]
    notes = [line for line in capsys.readouterr().out.splitlines() if NOTE in line]
    assert len(notes) == 1 and "float32" in notes[0]
    assert fast.effective_precision("bfloat16") == "float32"


@pytest.mark.parametrize("flags", [{"avx512_bf16"}, {"amx_bf16", "amx_tile"}])
def test_bfloat16_is_kept_where_the_cpu_has_it(monkeypatch, capsys, flags):
    monkeypatch.setattr(fast, "cpu_flags", lambda: flags)
    assert fast.effective_precision("bfloat16") == "bfloat16"
    assert NOTE not in capsys.readouterr().out


def test_cpu_flags_are_read_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\n"
                       "processor\t: 1\nflags\t\t: fpu avx512f avx512_bf16\n")
    assert fast.cpu_flags(cpuinfo) == {"fpu", "avx512f", "avx512_bf16"}
    assert fast.cpu_flags(tmp_path / "missing") == set()


def test_precision_is_part_of_the_resume_key():
    some = (np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))  # any 10 images
    float32, bfloat16 = (resume.resume_key(settings_for(["--precision", precision],
                                                         (some, some)))
                         for precision in ("float32", "bfloat16"))
    assert resume.differences(float32, bfloat16) == ["precision 'float32' -> 'bfloat16'"]
    # A backup written before precision was recorded computed in float32.
    older = {key: value for key, value in float32.items() if key != "precision"}
    assert resume.differences(older, float32) == []
    assert resume.differences(older, bfloat16) == ["precision 'float32' -> 'bfloat16'"]


class Clocks:
    """Stand-ins for the time module's two clocks, each a step further at every reading:
    the wall clock by 10 s, the process's CPU clock by 1 s."""

    def __init__(self):
        self.wall, self.cpu = 100.0, 50.0

    def perf_counter(self):
        self.wall += 10
        return self.wall

    def process_time(self):
        self.cpu += 1
        return self.cpu


def test_run_json_records_each_epochs_cpu_seconds_beside_its_wall_seconds(
        monkeypatch, data_dir, tmp_path):
    """A real run whose epoch timer reads the clocks above: each epoch reads each clock
    once as it begins and once as it ends, so 10 wall seconds and 1 CPU second."""
    monkeypatch.setattr(callbacks, "time", Clocks())
    out = tmp_path / "out"
    mb.main(["--epochs", "2", "--limit", "300", "--batch-size", "60", "--no-plot",
             "--verbose", "0", "--data-dir", str(data_dir), "--output-dir", str(out)])
    run = json.loads((out / "run.json").read_text())
    assert run["epoch_seconds"] == [10.0, 10.0]
    assert run["epoch_cpu_seconds"] == [1.0, 1.0]
    assert run["training_seconds"] == 20.0
    assert run["training_images_per_second"] == 240 * 2 / 20  # 300 images less 20%


@pytest.mark.parametrize("path", [[], ["--fast"]], ids=["default", "fast"])
def test_bfloat16_training_computes_in_bfloat16_on_both_paths(path, monkeypatch, data_dir,
                                                               tmp_path):
    """What the Dense layers receive inside fit's own training step, and the weights the
    trained model holds: bfloat16 arithmetic on float32 variables (Keras'
    mixed_bfloat16), on the default path as under --fast; a float32 run computes in
    float32."""
    monkeypatch.setattr(fast, "cpu_flags", lambda: {"avx512_bf16"})  # any CPU here
    seen, dense_call = [], keras.layers.Dense.call

    def call(self, inputs, training=None):
        seen.append(keras.backend.standardize_dtype(inputs.dtype))
        return dense_call(self, inputs, training=training)

    monkeypatch.setattr(keras.layers.Dense, "call", call)
    for precision in ("bfloat16", "float32"):
        seen.clear()
        result = mb.main([*path, "--precision", precision, "--epochs", "1", "--limit", "200",
                          "--batch-size", "40", "--no-plot", "--verbose", "0", "--data-dir",
                          str(data_dir), "--output-dir", str(tmp_path / precision)])
        assert result["config"]["precision"] == precision
        assert seen and set(seen) == {precision}, seen
        assert {v.dtype for v in result["model"].trainable_variables} == {"float32"}


@pytest.fixture(scope="module")
def digit_runs(tmp_path_factory):
    """--fast on 2,000 real MNIST digits, float32 and bfloat16, seeds 1 and 2; the moving
    statistics recomputed, so that their lag does not decide (docs/batchnorm-statistics.md)."""
    folder = tmp_path_factory.mktemp("digits")
    mnist_digits.write_folder(folder / "data")
    runs = {}
    with pytest.MonkeyPatch.context() as patch:  # bfloat16 even on a CPU without it
        patch.setattr(fast, "cpu_flags", lambda: {"avx512_bf16"})
        for precision in ("float32", "bfloat16"):
            for seed in (1, 2):
                out = folder / f"{precision}-{seed}"
                mb.main(["--fast", "--precision", precision, "--seed", str(seed),
                         "--epochs", "2", "--limit", "2000", "--recompute-bn-stats",
                         "--data-dir", str(folder / "data"), "--output-dir", str(out),
                         "--no-plot", "--verbose", "0"])
                runs.setdefault(precision, []).append(out)
    return runs


@pytest.mark.slow  # four trainings on real digits: .ci/run's slow phase
def test_bfloat16_is_as_accurate_as_float32_on_real_handwriting(digit_runs):
    accuracy = {precision: [json.loads((out / "run.json").read_text())["test_accuracy"]
                            for out in outs] for precision, outs in digit_runs.items()}
    assert min(accuracy["float32"]) > 0.8  # it learned the digits
    spread = max(max(a) - min(a) for a in accuracy.values())
    gap = abs(statistics.mean(accuracy["bfloat16"]) - statistics.mean(accuracy["float32"]))
    assert gap <= max(spread, 0.01), (accuracy, gap, spread)


@pytest.mark.slow  # the same four trainings
def test_bfloat16_run_records_it_and_saves_a_float32_model(digit_runs):
    out = digit_runs["bfloat16"][0]
    assert json.loads((out / "run.json").read_text())["config"]["precision"] == "bfloat16"
    model = keras.models.load_model(out / "model.keras")
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    images = mnist_digits.arrays()["test_imgs"][:8]
    predicted = model.predict(mb.preprocess(images), verbose=0)
    assert predicted.dtype == np.float32
    np.testing.assert_allclose(predicted.sum(axis=1), 1.0, rtol=1e-5)


def test_a_bfloat16_model_is_saved_as_float32(tmp_path):
    from machinery import record
    with fast.precision_policy("bfloat16"):
        model = mb.compile_model(mb.build_model(mb.input_shape, 10))
    assert model.layers[0].compute_dtype == "bfloat16"
    assert keras.config.dtype_policy().name == "float32"  # the policy is put back
    record.save_model(model, tmp_path / "model.keras", fused=False)
    reloaded = keras.models.load_model(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in reloaded.layers} == {"float32"}
    x = mb.preprocess(mnist_digits.arrays()["test_imgs"][:4])
    assert reloaded.predict(x, verbose=0).dtype == np.float32
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=0.02)  # the same weights; bfloat16 keeps ~3 digits
