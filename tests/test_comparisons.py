"""--compare's questions after the lesson's (docs/compare.md): where BatchNormalization
goes, how small a batch it takes, what gamma and beta are for, what replaces it. Every
network is what it says, layer by layer, with the parameters counted by hand; each
question runs from one command on KMNIST-format data and on real MNIST digits, prints
its table and writes its picture and comparison.json; an interrupted one resumes; and a
new question is one entry of comparisons.KINDS."""
import contextlib
import dataclasses
import io
import json
import re

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, interrupted, settings_for
from machinery import compare, comparisons
from testdata import mnist_digits, synthetic

SOME = (np.zeros((10, 28, 28), np.uint8), np.zeros(10, np.uint8))  # any 10 images


def built(question, flags=()):
    """{variant name: (its model, its settings)} as --compare `question` builds them."""
    run = settings_for(["--compare", question, *flags], (SOME, SOME))
    models = {}
    for variant in comparisons.KINDS[question].variants(run.learning_rates, run.batch_sizes):
        variant_run = compare.variant_of(run, variant)
        models[variant.name] = (mb.make_model(variant_run), variant_run)
    return models


def kinds(model):
    """Each layer as its class, with its activation where it has one."""
    return [type(layer).__name__ + (f"({layer.activation.__name__})"
                                    if hasattr(layer, "activation") else "")
            for layer in model.layers]


# Parameters by hand. Convolutions 3x3 over 1 then 32 channels, 32 and 64 filters; Dense
# 1,600 -> 256 -> 10. BatchNormalization keeps 4 numbers a channel (gamma, beta, the two
# moving statistics), LayerNormalization and GroupNormalization 2 (gamma, beta).
CONV1, CONV2, DENSE, OUT = 3 * 3 * 1 * 32, 3 * 3 * 32 * 64, 1600 * 256, 256 * 10 + 10
BIASES = 32 + 64 + 256
CHANNELS = 32 + 32 + 64 + 64 + 256  # the five normalised places
LESSON = CONV1 + CONV2 + DENSE + OUT + BIASES  # 431,242 without normalisation


def test_placement_before_the_relu_is_the_papers_with_the_biases_dropped():
    models = built("placement")
    after, _ = models["after_relu"]
    before, run = models["before_relu"]
    assert after.count_params() == LESSON + 4 * CHANNELS == 433_034  # the lesson's
    assert kinds(before) == [
        "Conv2D(linear)", "BatchNormalization", "Activation(relu)", "MaxPooling2D",
        "BatchNormalization", "Conv2D(linear)", "BatchNormalization", "Activation(relu)",
        "MaxPooling2D", "BatchNormalization", "Flatten", "Dense(linear)",
        "BatchNormalization", "Activation(relu)", "Dense(softmax)"]
    assert [layer.use_bias for layer in before.layers if hasattr(layer, "use_bias")] == [
        False, False, False, True]  # beta takes over the biases; the output keeps its own
    assert before.count_params() == LESSON - BIASES + 4 * CHANNELS == 432_682
    assert run.network_name == "before_relu"


def test_gamma_beta_trains_sigmoids_fed_by_batchnormalization_with_and_without_them():
    models = built("gamma-beta")
    with_them, _ = models["sigmoid_gamma_beta"]
    without, _ = models["sigmoid_no_gamma_beta"]
    for model in (with_them, without):
        layers = kinds(model)
        assert layers.count("Activation(sigmoid)") == 3 and "Activation(relu)" not in layers
        for index, kind in enumerate(layers):  # each sigmoid's input is a layer's output
            if kind == "Activation(sigmoid)":
                assert layers[index - 1] == "BatchNormalization"
    norms = [[layer for layer in model.layers
              if isinstance(layer, keras.layers.BatchNormalization)]
             for model in (with_them, without)]
    assert all(n.gamma is not None and n.beta is not None for n in norms[0])
    assert all(n.gamma is None and n.beta is None for n in norms[1])
    assert with_them.count_params() == LESSON - BIASES + 4 * CHANNELS == 432_682
    assert without.count_params() == LESSON - BIASES + 2 * CHANNELS == 431_786


def test_normalization_puts_each_layer_in_batchnormalizations_five_places():
    models = built("normalization")
    expected = {"norm_batch": ("BatchNormalization", LESSON + 4 * CHANNELS),
                "norm_layer": ("LayerNormalization", LESSON + 2 * CHANNELS),
                "norm_group": ("GroupNormalization", LESSON + 2 * CHANNELS),
                "norm_none": (None, LESSON)}
    lesson_kinds = kinds(mb.build_model((28, 28, 1), 10))
    for name, (layer_kind, parameters) in expected.items():
        model, _ = models[name]
        assert model.count_params() == parameters, name
        if layer_kind:  # the lesson's layers, another normalisation in its places
            assert kinds(model) == [layer_kind if k == "BatchNormalization" else k
                                    for k in lesson_kinds], name
    group = next(layer for layer in models["norm_group"][0].layers
                 if isinstance(layer, keras.layers.GroupNormalization))
    assert group.groups == 32  # Keras' default, Wu & He's


@pytest.mark.parametrize("flags, sizes", [((), (16, 64, 250)),
                                          (("--batch-size", "32", "128"), (32, 128))])
def test_batch_size_trains_the_lessons_network_at_each_size(flags, sizes):
    models = built("batch-size", flags)
    assert [run.batch_size for _, run in models.values()] == list(sizes)
    assert list(models) == [f"batch_{size}" for size in sizes]
    assert {model.count_params() for model, _ in models.values()} == {433_034}


def test_the_default_network_is_the_lessons_exactly():
    run = settings_for([], (SOME, SOME))
    assert run.network is None and run.compare is None
    assert kinds(mb.make_model(run)) == kinds(mb.build_model((28, 28, 1), 10))


def test_a_backup_of_another_network_is_refused():
    from machinery import resume
    placement = built("placement")
    saved, wanted = (resume.resume_key(run) for _, run in
                     (placement["before_relu"], placement["after_relu"]))
    assert resume.differences(saved, wanted) == ["network_name 'before_relu' -> None"]


FLAGS = ["--epochs", "1", "--verbose", "0"]


@pytest.fixture(scope="module")
def kmnist_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-kinds")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(300, 100))
    return folder


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("compare-digits")
    mnist_digits.write_folder(folder, train=1000)
    return folder


ROWS = {  # the rows of its own each question's table holds, beside the common ones
    "placement": [], "normalization": [],
    "batch-size": ["training steps", "share of the moving statistics' start left"],
    "gamma-beta": [f"sigmoid {k}: share of its inputs between -1 and 1" for k in (1, 2, 3)],
}


def answers(question, data, out, capsys):
    """--compare `question` from one command: the table's rows by label, and the files."""
    assert cli(["--compare", question, *FLAGS, "--data-dir", str(data),
                "--output-dir", str(out)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    variants = comparisons.KINDS[question].variants((0.001,), (250,))
    assert table[0] == "| | " + " | ".join(v.label for v in variants) + " |"
    summary = json.loads((out / "comparison.json").read_text())
    assert list(summary) == [v.name for v in variants]
    picture = out / f"{question.replace('-', '_')}_comparison.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for variant in variants:
        run = json.loads((out / variant.name / "run.json").read_text())
        assert run["config"]["network"] == variant.changes.get("network")
    return {line.split(" | ")[0].strip("| "): line for line in table[2:]}, summary


@pytest.mark.parametrize("question", list(ROWS))
def test_each_question_answers_from_one_command_on_kmnist_files(question, kmnist_files,
                                                                tmp_path, capsys):
    rows, summary = answers(question, kmnist_files, tmp_path / "out", capsys)
    assert "test accuracy" in rows and "final validation accuracy, moving statistics" in rows
    for label in ROWS[question]:
        assert any(row.startswith(label) for row in rows), label
    for name, entry in summary.items():
        assert len(entry["rows"]) == len(ROWS[question]), name


@pytest.mark.slow
@pytest.mark.parametrize("question", list(ROWS))
def test_each_question_answers_from_one_command_on_real_digits(question, digits, tmp_path,
                                                               capsys):
    rows, _ = answers(question, digits, tmp_path / "out", capsys)
    assert "test accuracy" in rows


def test_batch_size_steps_follow_the_batch_size(kmnist_files, tmp_path, capsys):
    # 300 training images, the last 20% held out: 240 in batches of 16, 64 and 250 are
    # 15, 4 and 1 steps (hand-computed); momentum^steps is 0.99 to that power.
    rows, summary = answers("batch-size", kmnist_files, tmp_path / "out", capsys)
    assert rows["training steps"].endswith("| 15 | 4 | 1 |")
    shares = [summary[name]["rows"]["share of the moving statistics' start left "
                                    "(momentum^steps)"] for name in summary]
    np.testing.assert_allclose(shares, [0.99 ** 15, 0.99 ** 4, 0.99 ** 1])


def test_the_sigmoid_share_is_the_share_of_the_saved_models_inputs_within_1(
        kmnist_files, tmp_path, capsys):
    out = tmp_path / "out"
    answers("gamma-beta", kmnist_files, out, capsys)
    arrays = synthetic.make_arrays(300, 100)
    probe = mb.preprocess(arrays["train_imgs"][240:490])  # the first validation batch
    for name in ("sigmoid_gamma_beta", "sigmoid_no_gamma_beta"):
        track = json.loads((out / name / "sigmoid_inputs.json").read_text())
        assert len(track["share"]) == 2  # before training, and after its one epoch
        model = keras.models.load_model(out / name / "model.keras")
        sigmoids = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
        inputs = keras.Model(model.inputs[0], [s.input for s in sigmoids])(probe, training=True)
        expected = [float(np.mean(np.abs(np.asarray(x)) < 1.0)) for x in inputs]
        np.testing.assert_allclose(track["share"][-1], expected, rtol=1e-6)


def test_an_interrupted_comparison_resumes_each_of_its_runs(kmnist_files, tmp_path):
    """Ctrl-C as the second network's first epoch is backed up, then the same command: the
    first run resumes from its backup (both epochs done), the second from its first."""
    out = tmp_path / "out"
    argv = ["--compare", "gamma-beta", "--epochs", "2", "--no-plot", "--verbose", "0",
            "--data-dir", str(kmnist_files), "--output-dir", str(out)]
    assert interrupted(argv, "after:machinery.backup.Backup.on_epoch_end#3") == 130
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli(argv) == 0
    resumed = re.findall(r"Resuming from the backup in .*/(\w+)/backup: (\d) epoch",
                         printed.getvalue())
    assert resumed == [("sigmoid_gamma_beta", "2"), ("sigmoid_no_gamma_beta", "1")]
    for name in ("sigmoid_gamma_beta", "sigmoid_no_gamma_beta"):
        assert len(json.loads((out / f"history_{name}.json").read_text())["loss"]) == 2
        shares = json.loads((out / name / "sigmoid_inputs.json").read_text())["share"]
        # before training and after each epoch, each measured by the run that trained it
        assert len(shares) == 3 and all(None not in share for share in shares), shares


def test_a_new_question_is_one_entry(kmnist_files, tmp_path, capsys, monkeypatch):
    """A fifth question, added here as one entry of comparisons.KINDS: --compare takes it,
    trains its variants and answers with its table, comparison.json and picture."""
    def momenta(rates, sizes):
        return [comparisons.Variant(f"momentum_{m}", f"momentum {m}", {"bn_momentum": m})
                for m in (0.99, 0.9)]
    entry = comparisons.Comparison("BatchNormalization's momentum", momenta,
                                   comparisons.over_epochs)
    monkeypatch.setitem(comparisons.KINDS, "momentum", entry)
    assert cli(["--compare", "momentum", *FLAGS, "--data-dir", str(kmnist_files),
                "--output-dir", str(tmp_path)]) == 0
    table = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert table[0] == "| | momentum 0.99 | momentum 0.9 |"
    for name, momentum in (("momentum_0.99", 0.99), ("momentum_0.9", 0.9)):
        run = json.loads((tmp_path / name / "run.json").read_text())
        assert run["config"]["bn_momentum"] == momentum
    assert (tmp_path / "momentum_comparison.png").exists()
    assert sorted(json.loads((tmp_path / "comparison.json").read_text())) == [
        "momentum_0.9", "momentum_0.99"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {"momentum_0.99", "momentum_0.9", "momentum_comparison.png"} <= set(
        manifest["files"])
    assert dataclasses.is_dataclass(entry)
