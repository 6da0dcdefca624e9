"""--learning-rate, several under --compare (docs/layer-inputs-and-learning-rates.md): a
run per (variant, rate) pair from the same seed, a diverging run stopped with one line,
both clocks in the table; and the faithful run unchanged."""
import contextlib
import io
import json
import math
import re

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import run_script, settings_for
from test_readme_errors import check_row
from machinery import learning_rates

PAIRS = ("batchnorm_lr0.001", "no_batchnorm_lr0.001", "batchnorm_lr1e+06",
         "no_batchnorm_lr1e+06")
LABELS = ("with BatchNormalization, learning rate 0.001",
          "without BatchNormalization, learning rate 0.001",
          "with BatchNormalization, learning rate 1e+06",
          "without BatchNormalization, learning rate 1e+06")


@pytest.fixture(scope="module")
def data(module_data_dir):
    return module_data_dir


@pytest.fixture(scope="module")
def rates(data, tmp_path_factory):
    """--compare at 0.001 and at 1e6, a rate at which the plain network's loss overflows."""
    out = tmp_path_factory.mktemp("rates") / "out"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        result = mb.main(["--compare", "--learning-rate", "0.001", "1e6", "--epochs", "2",
                          "--limit", "300", "--batch-size", "60", "--data-dir", str(data),
                          "--output-dir", str(out)])
    return out, result, printed.getvalue()


def runs(out):
    return {name: json.loads((out / name / "run.json").read_text()) for name in PAIRS}


def histories(out):
    return {name: json.loads((out / f"history_{name}.json").read_text()) for name in PAIRS}


def test_every_pair_trains_in_its_own_folder_at_its_rate_from_the_same_seed(rates):
    out, _, _ = rates
    for name, run in runs(out).items():
        assert run["config"]["learning_rate"] == (0.001 if "0.001" in name else 1e6)
        assert run["config"]["batchnorm"] is name.startswith("batchnorm")
        assert run["config"]["seed"] == 1
        assert (out / name / "model.keras").exists()
        assert (out / name / "layer_inputs.json").exists()
    for name in ("batchnorm_comparison.png", "layer_inputs.png", "comparison.json"):
        assert (out / name).stat().st_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["state"] == "finished"
    assert set(PAIRS) | {f"history_{name}.json" for name in PAIRS} <= set(manifest["files"])


def test_predict_on_the_top_folder_names_the_pairs_sub_folders(rates, tmp_path, capsys):
    # The folders the table's row names (batchnorm_lr0.001, ..., those of 0.001 and 0.1),
    # here of 0.001 and 1e6: each holds the model.keras --predict asks for.
    out, _, _ = rates
    png = tmp_path / "digit.png"
    keras.utils.save_img(png, np.zeros((28, 28, 1), np.uint8), scale=False)
    check_row(capsys, "`--predict` with a folder without `model.keras`",
              ["--predict", out, png], outputs=out, **{"lr0.1": "lr1e+06"})


def test_a_diverging_run_stops_with_one_line_and_the_others_go_on(rates):
    out, _, printed = rates
    history = histories(out)
    diverged = [name for name in PAIRS if not all(map(math.isfinite, history[name]["loss"]))]
    assert "no_batchnorm_lr1e+06" in diverged  # the plain network at 1e6 overflows
    assert all(len(history[name]["loss"]) == 1 for name in diverged)  # stopped in epoch 1
    assert all(len(history[name]["loss"]) == 2 for name in PAIRS if name not in diverged)
    lines = [line for line in printed.splitlines() if line.startswith("Diverged")]
    assert len(lines) == len(diverged)
    for line in lines:  # NaN here; another machine's arithmetic may overflow to inf first
        assert re.fullmatch(r"Diverged: the training loss became (nan|inf) in epoch 1 at "
                            r"learning rate 1e\+06; this run stops here, the others go on\.",
                            line), line


def expected_cell(history, run, threshold, clock):
    epoch = next((e for e, v in enumerate(history["val_accuracy"], 1) if v >= threshold), None)
    if epoch is None:
        return "not reached"
    return str(epoch) if clock == "epochs" else f"{sum(run['epoch_seconds'][:epoch]):.1f}"


def test_the_table_has_a_column_per_pair_both_clocks_and_says_which_diverged(rates):
    out, _, printed = rates
    history, run = histories(out), runs(out)
    table = [line for line in printed.splitlines() if line.startswith("|")]
    assert table[0] == "| | " + " | ".join(LABELS) + " |"

    def row(label, cell):
        return f"| {label} | " + " | ".join(cell(name) for name in PAIRS) + " |"
    for percent in (90, 95, 98):
        for clock in ("epochs", "seconds"):
            assert row(f"{clock} to {percent}% validation accuracy", lambda n: expected_cell(
                history[n], run[n], percent / 100, clock)) in table
    assert row("diverged (loss NaN or infinite)", lambda n: (
        "no" if all(map(math.isfinite, history[n]["loss"])) else "diverged at epoch 1")) in table
    assert row("final validation accuracy, batch statistics", lambda n: (
        f"{run[n]['batchnorm_diagnosis']['val_accuracy_batch_statistics']:.4f}"
        if n.startswith("batchnorm") else "-")) in table


def test_the_plain_variants_percentiles_match_a_recomputation_too(rates, data):
    out, _, _ = rates
    images = np.load(data / "kmnist-train-imgs.npz")["arr_0"][:300]
    probe = images[240:300].reshape(-1, 28, 28, 1).astype("float32") / 255  # the validation
    for name in ("batchnorm_lr0.001", "no_batchnorm_lr0.001"):
        model = keras.models.load_model(out / name / "model.keras")
        cut = keras.Model(model.inputs[0], model.layers[-1].input)
        record = json.loads((out / name / "layer_inputs.json").read_text())
        np.testing.assert_allclose(
            [record[f"p{p}"][-1] for p in (15, 50, 85)],
            np.percentile(np.asarray(cut(probe, training=True)), [15, 50, 85]),
            rtol=1e-5, atol=1e-6)


def test_the_faithful_run_trains_with_adams_0_001():
    some = (np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))  # any 10 images
    run = settings_for([], (some, some))
    model = mb.make_model(run)
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.001)
    assert run.layer_inputs_of is None  # not tracked


def test_without_the_study_flags_a_run_prints_only_the_lessons_lines(data, tmp_path):
    """The lines a run without flags prints: the lesson's epochs and test line, the notes
    and the files written; nothing of --learning-rate or --track-layer-inputs
    (docs/flags-and-outputs.md)."""
    out = tmp_path / "out"
    done = run_script("--epochs", "2", "--limit", "500", "--data-dir", data,
                      "--output-dir", out)
    assert done.returncode == 0, done.stderr
    forms = [r"Note: loaded 600 training and 100 test images; the official KMNIST has 60,000 "
             r"and 10,000\.", r"Epoch 1/2", r"2/2 - \d+s - \S+ - accuracy: \S+ - loss: \S+ - val_accuracy: "
             r"\S+ - val_loss: \S+", r"Epoch 2/2", r"2/2 - .*", r"Test loss: \S+ / Test "
             r"accuracy: \S+", r"(Note: validation accuracy is .*)?",
             re.escape(f"Wrote history.json, model.keras, run.json, training_history.png, "
                       f"predictions.png, confusion_matrix.png, batchnorm_statistics.png "
                       f"to {out}")]
    lines = done.stdout.splitlines()
    if not lines[6].startswith("Note:"):  # the lag's note, when there is one
        lines.insert(6, "")
    assert len(lines) == len(forms), done.stdout
    for form, line in zip(forms, lines):
        assert re.fullmatch(form, line), (form, line)
    assert not (out / "layer_inputs.json").exists()


def test_an_infinite_loss_stops_the_run_as_a_nan_does(capsys):
    """A loss that overflows to inf, never NaN: squared errors of targets of 1e30 exceed
    float32's largest number (3.4e38) in the first step, while every gradient and weight
    stays a number. The run stops after that epoch with the line; the table's column
    counts the first infinite epoch as the divergence."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="mean_squared_error")
    stop = learning_rates.StopOnDivergence(0.1)
    history = model.fit(np.ones((8, 1), "float32"), np.full((8, 1), 1e30, "float32"),
                        epochs=3, batch_size=8, verbose=0, callbacks=[stop]).history
    assert history["loss"] == [float("inf")]  # one epoch, and infinite, not NaN
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert capsys.readouterr().out == (
        "Diverged: the training loss became inf in epoch 1 at learning rate 0.1; this run "
        "stops here, the others go on.\n")
    assert learning_rates.diverged_at([2.3, 1.1, float("inf"), float("nan")]) == 3


def test_an_interrupted_several_rate_compare_resumes_and_shows_no_seconds_it_did_not_time(
        data, tmp_path):
    """Ctrl-C as the second pair's first epoch is backed up (the 5th backup: four epochs
    of the first pair, then one), then the same command: the first two pairs resume from
    their own backups, the others start, all end with four epochs. A resumed pair's
    seconds to a threshold are `-` (some of its epochs ran in another process, untimed),
    even where the epochs this process timed would cover it; a fresh pair's are the sum
    of its epochs' seconds."""
    from conftest import cli, interrupted
    out = tmp_path / "out"
    argv = ["--compare", "--learning-rate", "0.001", "0.01", "--epochs", "4",
            "--batch-size", "20", "--no-plot", "--verbose", "0", "--data-dir",
            str(data), "--output-dir", str(out)]
    assert interrupted(argv, "after:machinery.backup.Backup.on_epoch_end#5") == 130
    names = ("batchnorm_lr0.001", "no_batchnorm_lr0.001", "batchnorm_lr0.01",
             "no_batchnorm_lr0.01")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(argv) == 0
    resumed = re.findall(r"Resuming from the backup in .*/(\w+[.\d]*)/backup: (\d) epoch",
                         printed.getvalue())
    assert resumed == [(names[0], "4"), (names[1], "1")]
    table = [line for line in printed.getvalue().splitlines() if line.startswith("|")]
    runs = {name: json.loads((out / name / "run.json").read_text()) for name in names}
    history = {name: json.loads((out / f"history_{name}.json").read_text()) for name in names}
    assert [runs[n]["resumed_from_epoch"] for n in names] == [4, 1, 0, 0]
    assert all(len(history[n]["loss"]) == 4 for n in names)
    assert len(runs[names[1]]["epoch_seconds"]) == 3  # epochs 2 to 4 timed here
    timed_reach = 0
    for percent in (90, 95, 98):
        cells = []
        for name in names:
            reached = [e for e, v in enumerate(history[name]["val_accuracy"], 1)
                       if v >= percent / 100]
            seconds = runs[name]["epoch_seconds"]
            cells.append("not reached" if not reached else "-" if runs[name]["resumed_from_epoch"]
                         else f"{sum(seconds[:reached[0]]):.1f}")
            timed_reach += name == names[1] and bool(reached) and reached[0] <= len(seconds)
        assert f"| seconds to {percent}% validation accuracy | " + " | ".join(cells) + " |" \
            in table
    assert timed_reach, history[names[1]]  # the second pair reached a threshold within the epochs timed here
