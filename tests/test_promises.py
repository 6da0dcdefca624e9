"""Promises tested against outside values: a backup checked byte for byte
and step for step and resumed from its own weights, Keras' own MNIST hash, a read-only
folder or a missing permission, a genuine bug's traceback, run.json's record of the
data, the determinism and momentum^steps, and --no-batchnorm's model and pictures.
Expected values are literals from the docs, hand computations or Keras' own source."""
import errno
import hashlib
import inspect
import io
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest

import model_batchnorm as mb
from conftest import cli, error_lines
from machinery import files
from machinery.errors import ScriptError
from testdata import synthetic
from test_readme_errors import assert_whole_line, readme_row

# 300 images, 20% for validation: 240 to train on, 3 steps of 100 an epoch.
FLAGS = ["--limit", "300", "--batch-size", "100", "--verbose", "2", "--no-plot"]


class CtrlCAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("promises-data")
    arrays = synthetic.make_arrays(600, 200)
    synthetic.write(synthetic.folder_paths(folder), arrays)
    return folder, arrays


@pytest.fixture(scope="module")
def stopped(data, tmp_path_factory):
    """A run with --epochs 3 stopped by Ctrl-C after its first epoch was backed up."""
    out = tmp_path_factory.mktemp("promises-stopped") / "run"
    with pytest.MonkeyPatch.context() as patch:
        real_train = mb.train
        patch.setattr(mb, "train", lambda *args: real_train(
            *args[:-1], args[-1] + [CtrlCAfterFirstEpoch()]))
        assert cli(["--epochs", "3", "--data-dir", str(data[0]), "--output-dir", str(out),
                    *FLAGS]) == 130
    return out


@pytest.fixture
def backup_copy(stopped, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(stopped, out)
    return out


def command(data, out, epochs=3):
    return ["--epochs", str(epochs), "--data-dir", str(data[0]), "--output-dir", str(out),
            *FLAGS]


def rewrite_state(out, change):
    """Apply `change` to the backup's arrays and write them back, metadata made to match,
    so that only the content, not the file's integrity, is wrong."""
    state = out / "backup" / "epoch-1.npz"
    with np.load(state) as archive:
        arrays = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    change(arrays)
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    state.write_bytes(buffer.getvalue())
    metadata = out / "backup" / "training_metadata.json"
    fields = json.loads(metadata.read_text())
    fields.update(bytes=len(buffer.getvalue()),
                  sha256=hashlib.sha256(buffer.getvalue()).hexdigest())
    metadata.write_text(json.dumps(fields))


def test_a_backup_with_one_byte_changed_is_refused(backup_copy, data, capsys):
    state = backup_copy / "backup" / "epoch-1.npz"
    content = bytearray(state.read_bytes())
    content[len(content) // 2] ^= 0xFF  # the same length, one byte different
    state.write_bytes(bytes(content))
    assert cli(command(data, backup_copy)) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: the backup in {backup_copy}/backup cannot be trusted (epoch-1.npz is "
        "truncated or changed since epoch 1): add --restart to discard it and start at "
        "epoch 1, or choose another --output-dir"]


def test_a_backup_whose_optimizer_took_other_steps_is_refused(backup_copy, data, capsys):
    def seven_steps(arrays):
        # The optimizer's step counter: the one integer scalar, 3 after one epoch.
        [index] = [i for i, a in enumerate(arrays) if a.ndim == 0 and a.dtype.kind == "i"]
        assert arrays[index] == 3
        arrays[index] = np.asarray(7, dtype=arrays[index].dtype)

    rewrite_state(backup_copy, seven_steps)
    assert cli(command(data, backup_copy)) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: the backup in {backup_copy}/backup cannot be trusted (the optimizer took "
        "7 steps, not 1 epoch(s) of 3): add --restart to discard it and start at epoch 1, "
        "or choose another --output-dir"]


def test_a_resumed_run_continues_from_the_saved_weights(backup_copy, data):
    with np.load(backup_copy / "backup" / "epoch-1.npz") as archive:
        saved = [archive[f"arr_{i}"] for i in range(len(archive.files))]
    # --epochs 1: the backup already holds it; the model is the restored one, untrained.
    result = mb.main(command(data, backup_copy, epochs=1))
    assert result["resumed_from_epoch"] == 1 and result["epochs_completed"] == 1
    weights = [np.asarray(w) for w in result["model"].weights]
    assert len(weights) == 28  # 2 for each Conv2D and Dense (4), 4 for each BN layer (5)
    for restored, kept in zip(weights, saved):
        np.testing.assert_array_equal(restored, kept)


def test_the_mnist_hash_is_the_one_keras_itself_checks():
    from keras.src.datasets import mnist
    from machinery import keras_datasets
    keras_own = re.findall(r'"([0-9a-f]{64})"', inspect.getsource(mnist.load_data))
    assert keras_own == [keras_datasets.MNIST_SHA256]


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES, errno.EPERM],
                         ids=["read-only folder", "no permission", "not permitted"])
def test_a_read_only_folder_or_a_missing_permission_is_one_line(code, tmp_path):
    target = tmp_path / "model.keras"

    def refused(partial):
        partial.write_bytes(b"half")  # what got written before the refusal
        raise OSError(code, os.strerror(code))

    with pytest.raises(ScriptError) as raised:
        files.write_atomically(target, refused)
    messages, _ = readme_row("a full disk, a read-only folder")
    assert_whole_line(messages[0], f"error: {raised.value}",
                      **{"<file>": target, "No space left on device": os.strerror(code)})
    assert sorted(tmp_path.iterdir()) == []  # neither the file nor its half


def test_a_genuine_bug_still_shows_its_traceback(data, tmp_path, monkeypatch):
    def broken(*args):
        return 1 / 0

    monkeypatch.setattr(mb, "test", broken)
    # cli.run turns only the user's problems into one line; a bug propagates, and
    # Python prints its traceback.
    with pytest.raises(ZeroDivisionError):
        cli(command(data, tmp_path / "out", epochs=1))


def data_sha256_by_hand(arrays, limit):
    """docs/flags-and-outputs.md: the SHA-256 of the data trained and tested on, after
    --limit: each array's dtype and shape, then its bytes, in the order the files come."""
    digest = hashlib.sha256()
    for name in ("train_imgs", "train_labels", "test_imgs", "test_labels"):
        array = np.ascontiguousarray(arrays[name][:limit])
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def test_run_json_records_the_data_hash_determinism_and_momentum_power(data, tmp_path):
    out = tmp_path / "out"
    assert cli([*command(data, out, epochs=2), "--seed", "3"]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["data_sha256"] == data_sha256_by_hand(data[1], 300)
    assert run["config"]["deterministic"] is True and run["config"]["seed"] == 3
    diagnosis = run["batchnorm_diagnosis"]
    assert diagnosis["training_steps"] == 6  # 2 epochs of 3 steps
    assert diagnosis["momentum_power_steps"] == pytest.approx(0.99 ** 6)


def test_an_unseeded_run_is_recorded_as_not_deterministic(data, tmp_path):
    out = tmp_path / "out"
    assert cli(command(data, out, epochs=1)) == 0
    config = json.loads((out / "run.json").read_text())["config"]
    assert config["deterministic"] is False and config["seed"] is None


def test_no_batchnorm_trains_the_network_without_its_five_layers_and_draws_no_statistics(
        data, tmp_path):
    out = tmp_path / "out"
    flags = [f for f in command(data, out, epochs=1) if f != "--no-plot"]
    result = mb.main([*flags, "--no-batchnorm"])
    model = result["model"]
    assert not [layer for layer in model.layers
                if isinstance(layer, keras.layers.BatchNormalization)]
    # 433,034 less the five layers' 4 values per channel: 4 * (32 + 32 + 64 + 64 + 256).
    assert model.count_params() == 433_034 - 1_792 == 431_242
    assert result["batchnorm_diagnosis"] is None
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert pictures == ["confusion_matrix.png", "predictions.png", "training_history.png"]


def test_overwrite_removes_every_file_of_the_old_finished_run(data, tmp_path):
    out = tmp_path / "out"
    with_pictures = [f for f in command(data, out, epochs=1) if f != "--no-plot"]
    assert cli(with_pictures) == 0
    assert len(list(out.glob("*.png"))) == 4  # the curves, predictions, matrix, statistics
    assert cli([*command(data, out, epochs=1), "--overwrite"]) == 0  # --no-plot this time
    assert list(out.glob("*.png")) == []  # the old run's pictures went with it


def test_overwrite_after_an_unfinished_run_starts_at_epoch_1(backup_copy, data, capsys):
    assert cli([*command(data, backup_copy, epochs=1), "--overwrite"]) == 0
    assert "Resuming" not in capsys.readouterr().out
    run = json.loads((backup_copy / "run.json").read_text())
    assert run["resumed_from_epoch"] == 0 and run["epochs_completed"] == 1
