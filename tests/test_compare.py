"""The lesson's question, --compare, and BatchNormalization at inference."""
import contextlib
import io
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, error_lines, kmnist_in_cache
from machinery import compare, comparisons
from testdata import synthetic


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    """A real --compare run: its output folder, result and everything it printed."""
    out = tmp_path_factory.mktemp("compare")
    printed = io.StringIO()
    with kmnist_in_cache(), contextlib.redirect_stdout(printed):
        result = mb.main(["--compare", "--epochs", "2", "--output-dir", str(out)])
    return out, result, printed.getvalue()


def test_compare_writes_both_histories_the_overlay_and_the_summary(comparison):
    out, _, _ = comparison
    for name in ("history_batchnorm.json", "history_no_batchnorm.json",
                 "batchnorm_comparison.png", "comparison.json"):
        assert (out / name).stat().st_size > 0, name
    for variant in ("batchnorm", "no_batchnorm"):
        assert (out / variant / "model.keras").exists()
        history = json.loads((out / f"history_{variant}.json").read_text())
        assert len(history["val_accuracy"]) == 2


def test_compare_records_the_seed_and_variant_of_each_run(comparison):
    out, _, _ = comparison
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["batchnorm"]["parameters"] == 433_034
    assert summary["no_batchnorm"]["parameters"] == 431_242
    runs = [json.loads((out / v / "run.json").read_text()) for v in ("batchnorm", "no_batchnorm")]
    assert [r["config"]["seed"] for r in runs] == [1, 1]  # README: "from the same seed (1 unless `--seed`)"
    assert [r["config"]["batchnorm"] for r in runs] == [True, False]
    assert runs[0]["train_images"] == runs[1]["train_images"]
    assert all(s["seconds_per_epoch"] > 0 for s in summary.values())


def table_lines(printed):
    return [line for line in printed.splitlines() if line.startswith("|")]


def first_epoch_reaching(values, threshold):
    return next((str(epoch) for epoch, value in enumerate(values, 1) if value >= threshold),
                "not reached")


def seconds_to_reach(values, epoch_seconds, threshold):
    """The wall-clock seconds of the epochs up to the first that reaches threshold."""
    epoch = first_epoch_reaching(values, threshold)
    return epoch if epoch == "not reached" else f"{sum(epoch_seconds[:int(epoch)]):.1f}"


def test_compare_prints_the_table_of_both_runs(comparison):
    out, _, printed = comparison
    runs = [json.loads((out / v / "run.json").read_text()) for v in ("batchnorm", "no_batchnorm")]
    histories = [json.loads((out / f"history_{v}.json").read_text())
                 for v in ("batchnorm", "no_batchnorm")]

    def row(label, cells):
        return f"| {label} | {cells[0]} | {cells[1]} |"
    expected = [
        "| | with BatchNormalization | without BatchNormalization |",
        "|---|---|---|",
        "| parameters | 433,034 | 431,242 |",
        row("test accuracy", [f"{r['test_accuracy']:.4f}" for r in runs]),
        row("test loss", [f"{r['test_loss']:.4f}" for r in runs]),
        *(line for percent in (90, 95, 98) for line in (
            row(f"epochs to {percent}% validation accuracy",
                [first_epoch_reaching(h["val_accuracy"], percent / 100) for h in histories]),
            row(f"seconds to {percent}% validation accuracy",
                [seconds_to_reach(h["val_accuracy"], r["epoch_seconds"], percent / 100)
                 for h, r in zip(histories, runs)]))),
        row("seconds per epoch",
            [f"{sum(r['epoch_seconds']) / len(r['epoch_seconds']):.2f}" for r in runs]),
        row("diverged (loss NaN or infinite)", ["no", "no"]),
        row("final validation accuracy, moving statistics",
            [f"{h['val_accuracy'][-1]:.4f}" for h in histories]),
        row("final validation accuracy, batch statistics",  # no BatchNormalization: "-"
            [f"{runs[0]['batchnorm_diagnosis']['val_accuracy_batch_statistics']:.4f}", "-"]),
        row("final validation accuracy, recomputed statistics (--recompute-bn-stats)",
            ["-", "-"]),  # not asked for
    ]
    assert table_lines(printed) == expected


def test_compare_prints_each_variants_test_line(comparison):
    out, _, printed = comparison
    runs = [json.loads((out / v / "run.json").read_text()) for v in ("batchnorm", "no_batchnorm")]
    assert [line for line in printed.splitlines() if line.startswith("Test loss:")] == [
        f"Test loss: {r['test_loss']} / Test accuracy: {r['test_accuracy']}" for r in runs]


# Known results (the README's comparison), handed to --compare in place of training.
KNOWN = {
    "batchnorm": dict(parameters=433_034, test_accuracy=0.99654, test_loss=0.01249,
                      val_accuracy=[0.5, 0.9, 0.95, 0.98],
                      epoch_seconds=[18.0, 18.16, 18.0, 18.16],
                      batchnorm_diagnosis={"val_accuracy_batch_statistics": 0.99125,
                                           "val_accuracy_moving_statistics": 0.98875,
                                           "recomputed": True}),
    "no_batchnorm": dict(parameters=431_242, test_accuracy=0.98671, test_loss=0.03904,
                         val_accuracy=[0.9, 0.95, 0.97, 0.979],
                         epoch_seconds=[9.0, 9.12, 9.0, 9.12]),
}


def kernels(model):
    return [w.numpy() for w in model.weights if w.path.endswith("kernel")]


@pytest.fixture
def compare_without_training(tmp_path, monkeypatch):
    """Run --compare with a stand-in for train_and_test that builds each variant's model
    (recording its starting kernels) and returns KNOWN instead of training."""
    synthetic.write(synthetic.folder_paths(tmp_path / "data"), synthetic.make_arrays(300, 100))
    built = {}

    def stand_in(run, data):
        name = "batchnorm" if run.batchnorm else "no_batchnorm"
        assert run.variant == name  # a --compare run says so itself
        built[name] = kernels(mb.make_model(run))
        known = KNOWN[name]
        history = {"accuracy": known["val_accuracy"], "loss": [1.0] * 4,
                   "val_accuracy": known["val_accuracy"], "val_loss": [1.0] * 4}
        run.output_dir.mkdir(parents=True)
        (run.output_dir / "history.json").write_text(json.dumps(history))
        return {**known, "history": history, "train_images": 240}
    monkeypatch.setattr(mb, "train_and_test", stand_in)

    def run(*flags):
        mb.main(["--compare", "--no-plot", "--data-dir", str(tmp_path / "data"),
                 "--output-dir", str(tmp_path / "out"), *flags])
        return built
    return run


def starting_kernels(seed, batchnorm):
    keras.utils.set_random_seed(seed)
    return kernels(mb.build_model((28, 28, 1), 10, batchnorm))


@pytest.mark.parametrize("flags, seed", [([], 1), (["--seed", "4"], 4)], ids=["default", "seed"])
def test_compare_starts_both_variants_from_the_same_seed(flags, seed, compare_without_training):
    built = compare_without_training(*flags)
    for name, batchnorm in (("batchnorm", True), ("no_batchnorm", False)):
        expected = starting_kernels(seed, batchnorm)
        assert len(built[name]) == len(expected) == 4
        for kernel, reference in zip(built[name], expected):
            np.testing.assert_array_equal(kernel, reference)


def test_compare_prints_the_table_of_known_results(compare_without_training, capsys):
    compare_without_training()
    assert table_lines(capsys.readouterr().out) == [
        "| | with BatchNormalization | without BatchNormalization |",
        "|---|---|---|",
        "| parameters | 433,034 | 431,242 |",
        "| test accuracy | 0.9965 | 0.9867 |",
        "| test loss | 0.0125 | 0.0390 |",
        "| epochs to 90% validation accuracy | 2 | 1 |",  # reaching counts: >=
        "| seconds to 90% validation accuracy | 36.2 | 9.0 |",  # 18.0 + 18.16; 9.0
        "| epochs to 95% validation accuracy | 3 | 2 |",
        "| seconds to 95% validation accuracy | 54.2 | 18.1 |",
        "| epochs to 98% validation accuracy | 4 | not reached |",
        "| seconds to 98% validation accuracy | 72.3 | not reached |",
        "| seconds per epoch | 18.08 | 9.06 |",
        "| diverged (loss NaN or infinite) | no | no |",
        "| final validation accuracy, moving statistics | 0.9800 | 0.9790 |",
        "| final validation accuracy, batch statistics | 0.9912 | - |",
        "| final validation accuracy, recomputed statistics (--recompute-bn-stats) "
        "| 0.9888 | - |",
    ]


def test_epochs_to_reach_a_threshold():
    val_accuracy = [0.5, 0.91, 0.96, 0.97]
    assert compare.epochs_to_reach(val_accuracy, 0.90) == 2
    assert compare.epochs_to_reach(val_accuracy, 0.95) == 3
    assert compare.epochs_to_reach(val_accuracy, 0.98) is None
    assert compare.epochs_to_reach([0.95], 0.95) == 1  # reaching counts


def test_comparison_table_arithmetic_from_known_histories():
    def result(val_accuracy, seconds):
        return {"parameters": 1, "test_accuracy": 0.5, "test_loss": 1.0,
                "history": {"val_accuracy": val_accuracy}, "epoch_seconds": [seconds / 4] * 4}
    summary = compare.comparison_summary([
        comparisons.Run("with", result([0.92, 0.96, 0.985, 0.99], 8.0), Path("batchnorm")),
        comparisons.Run("without", result([0.85, 0.91, 0.93, 0.94], 4.0), Path("no_batchnorm")),
    ])
    assert summary["batchnorm"]["epochs_to_val_accuracy"] == {"90%": 1, "95%": 2, "98%": 3}
    assert summary["no_batchnorm"]["epochs_to_val_accuracy"] == {
        "90%": 2, "95%": None, "98%": None}
    assert (summary["batchnorm"]["seconds_per_epoch"],
            summary["no_batchnorm"]["seconds_per_epoch"]) == (2.0, 1.0)
    table = compare.format_comparison(summary)
    assert "| epochs to 95% validation accuracy | 2 | not reached |" in table
    assert "| seconds per epoch | 2.00 | 1.00 |" in table


def test_compare_with_no_batchnorm_is_refused(capsys):
    assert cli(["--compare", "--no-batchnorm"]) == 2
    assert error_lines(capsys.readouterr().err) == [
        "error: --compare chooses which of its networks have BatchNormalization; "
        "drop --no-batchnorm (see --help)"]


def test_inference_uses_moving_statistics_not_the_batch(comparison):
    _, result, _ = comparison
    model = result["variants"]["batchnorm"]["model"]
    norm = next(layer for layer in model.layers if "batch_normalization" in layer.name)
    assert not np.allclose(norm.moving_mean.numpy(), 0)  # training moved them
    images = mb.preprocess(synthetic.make_arrays(train=1, test=100, seed=7)["test_imgs"])
    alone = model.predict(images[:1], verbose=0)
    in_batch = model.predict(images, verbose=0)[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-4, atol=1e-5)
    training_mode = model(images, training=True).numpy()[:1]
    assert not np.allclose(training_mode, in_batch, atol=1e-3)


def test_compare_keeps_both_backups_until_the_comparison_is_written(tmp_path, monkeypatch,
                                                                    capsys):
    # docs/flags-and-outputs.md: backup/ is "removed last, after every file above is
    # written". The comparison's last write (--no-plot: comparison.json) fails here.
    from machinery import errors, files
    write_json = files.write_json

    def fail(path, data):
        if path.name == "comparison.json":
            raise errors.ScriptError(f"simulated failure writing {path.name}")
        write_json(path, data)

    monkeypatch.setattr(files, "write_json", fail)
    with kmnist_in_cache():
        assert cli(["--compare", "--epochs", "1", "--no-plot", "--verbose", "0",
                    "--output-dir", str(tmp_path)]) == 1
    assert "simulated failure writing comparison.json" in capsys.readouterr().err
    for variant in ("batchnorm", "no_batchnorm"):
        backup = tmp_path / variant / "backup"
        assert (backup / "training_metadata.json").is_file(), variant
        assert (backup / "epoch-1.npz").is_file(), variant
