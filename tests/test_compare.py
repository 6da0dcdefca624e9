"""The lesson's question, --compare; reproducible seeds; and BatchNormalization at inference."""
import json

import numpy as np
import pytest

import model_batchnorm as mb
from conftest import KERAS_HOME, cli
from machinery import compare, synthetic


@pytest.fixture(scope="module")
def comparison(tmp_path_factory):
    paths = synthetic.write(synthetic.cache_paths(KERAS_HOME), synthetic.make_arrays(600, 200))
    out = tmp_path_factory.mktemp("compare")
    result = mb.main(["--compare", "--epochs", "2", "--output-dir", str(out)])
    for path in paths.values():
        path.unlink()
    return out, result


def test_compare_writes_both_histories_the_overlay_and_the_summary(comparison):
    out, _ = comparison
    for name in ("history_batchnorm.json", "history_no_batchnorm.json",
                 "batchnorm_comparison.png", "comparison.json"):
        assert (out / name).stat().st_size > 0, name
    for variant in ("batchnorm", "no_batchnorm"):
        assert (out / variant / "model.keras").exists()
        history = json.loads((out / f"history_{variant}.json").read_text())
        assert len(history["val_accuracy"]) == 2


def test_compare_trains_both_variants_from_the_same_seed(comparison):
    out, result = comparison
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["batchnorm"]["parameters"] == 433_034
    assert summary["no_batchnorm"]["parameters"] == 431_242
    runs = [json.loads((out / v / "run.json").read_text()) for v in ("batchnorm", "no_batchnorm")]
    assert [r["config"]["seed"] for r in runs] == [1, 1]  # README: "from the same seed (1 unless `--seed`)"
    assert [r["config"]["batchnorm"] for r in runs] == [True, False]
    assert runs[0]["train_images"] == runs[1]["train_images"]
    assert all(s["seconds_per_epoch"] > 0 for s in summary.values())


def test_compare_prints_the_table(comparison, capsys):
    _, result = comparison
    table = compare.format_comparison(result["comparison"])
    assert table.splitlines()[0] == (
        "| | with BatchNormalization | without BatchNormalization |")
    assert "| parameters | 433,034 | 431,242 |" in table


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
    summary = compare.comparison_summary({
        "batchnorm": result([0.92, 0.96, 0.985, 0.99], 8.0),
        "no_batchnorm": result([0.85, 0.91, 0.93, 0.94], 4.0),
    })
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


def test_two_runs_with_the_same_seed_are_identical(keras_cache, tmp_path):
    runs = []
    for name in ("a", "b"):
        mb.main(["--epochs", "2", "--seed", "5", "--no-plot", "--output-dir",
                 str(tmp_path / name)])
        runs.append(json.loads((tmp_path / name / "history.json").read_text()))
    assert runs[0] == runs[1]
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["seed"] == 5 and run["config"]["deterministic"] is True


def test_inference_uses_moving_statistics_not_the_batch(comparison):
    _, result = comparison
    model = result["variants"]["batchnorm"]["model"]
    norm = next(layer for layer in model.layers if "batch_normalization" in layer.name)
    assert not np.allclose(norm.moving_mean.numpy(), 0)  # training moved them
    images = mb.preprocess(synthetic.make_arrays(train=1, test=100, seed=7)["test_imgs"])
    alone = model.predict(images[:1], verbose=0)
    in_batch = model.predict(images, verbose=0)[:1]
    np.testing.assert_allclose(alone, in_batch, rtol=1e-4, atol=1e-5)
    training_mode = model(images, training=True).numpy()[:1]
    assert not np.allclose(training_mode, in_batch, atol=1e-3)
