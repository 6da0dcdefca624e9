"""A backup is resumed only by the run that made it (README, "When things go wrong"):
Ctrl-C keeps it, the same command resumes it, another configuration is refused,
--restart discards it. In-process: Ctrl-C is a KeyboardInterrupt after epoch 1."""
import contextlib
import io
import json
import shutil

import keras
import pytest

import model_batchnorm as mb
from conftest import cli, error_lines, run_script
from testdata import synthetic


class CtrlCAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise KeyboardInterrupt


def command(data, out, *extra):
    return ["--epochs", "3", "--limit", "300", "--data-dir", str(data),
            "--output-dir", str(out), *extra]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-config-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(600, 200))
    synthetic.write(synthetic.folder_paths(folder, "k49"),
                    synthetic.make_arrays(600, 200, classes=49))
    return folder


@pytest.fixture(scope="module")
def interrupted(data, tmp_path_factory):
    """The same command as command(), stopped by Ctrl-C after its first epoch."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    real_train = mb.train
    mb.train = lambda *args: real_train(*args[:-1], args[-1] + [CtrlCAfterFirstEpoch()])
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            code = cli(command(data, out))
    finally:
        mb.train = real_train
    return out, code, stderr.getvalue()


@pytest.fixture
def backup(interrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(interrupted[0], out)
    return out


def snapshot(folder):
    return sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                  for p in folder.rglob("*"))


def logged_epochs(out):
    return [int(row.split(",")[0]) for row in (out / "history.csv").read_text().splitlines()[1:]]


def test_ctrl_c_exits_130_writes_the_finished_epoch_and_keeps_the_backup(interrupted):
    out, code, stderr = interrupted
    assert code == 130
    assert stderr.splitlines()[-1] == (
        f"Interrupted after 1 completed epoch(s); wrote {out}/history.json, "
        f"{out}/training_history.png. Run the same command again to resume from the backup.")
    history = json.loads((out / "history.json").read_text())
    assert sorted(history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert all(len(values) == 1 for values in history.values())
    assert (out / "training_history.png").stat().st_size > 0
    assert (out / "backup" / "training_metadata.json").exists()


@pytest.mark.parametrize("change, difference", [
    (["--limit", "400"], "limit 300 -> 400"),
    (["--batch-size", "100"], "batch_size 250 -> 100"),
    (["--validation-split", "0.3"], "validation_split 0.2 -> 0.3"),
    (["--no-batchnorm"], "batchnorm True -> False"),
    (["--dataset", "k49"], "dataset 'kmnist' -> 'k49'"),
    (["--learning-rate", "0.01"], "learning_rate 0.001 -> 0.01"),
    (["--track-batch-stats"], "track_batch_stats False -> True"),
], ids=["limit", "batch_size", "validation_split", "variant", "dataset", "learning_rate",
        "track_batch_stats"])
def test_backup_of_another_configuration_is_refused(change, difference, backup, data, capsys):
    before = snapshot(backup)
    assert cli(command(data, backup, *change)) == 1
    assert error_lines(capsys.readouterr().err) == [
        f"error: {backup} holds the backup of a different run ({difference}): "
        "add --restart to discard it, or choose another --output-dir"]
    assert snapshot(backup) == before  # nothing already written is touched


def test_the_same_command_resumes_and_history_covers_every_epoch(interrupted, backup, data,
                                                                  capsys):
    first_epoch = json.loads((interrupted[0] / "history.json").read_text())
    assert cli(command(data, backup, "--no-plot")) == 0
    assert (f"Resuming from the backup in {backup}/backup: 1 epoch(s) already done"
            in capsys.readouterr().out)
    history = json.loads((backup / "history.json").read_text())
    assert all(len(values) == 3 for values in history.values())
    assert {key: values[:1] for key, values in history.items()} == first_epoch
    assert logged_epochs(backup) == [0, 1, 2]
    assert not (backup / "backup").exists()


def test_log_row_of_an_epoch_the_backup_lacks_is_dropped(backup, data):
    # A kill between the log and the backup leaves a row for epoch 2 (index 1).
    header = (backup / "history.csv").read_text().splitlines()[0].split(",")
    with open(backup / "history.csv", "a") as log:
        log.write(",".join("1" if key == "epoch" else "9.5" for key in header) + "\n")
    assert cli(command(data, backup, "--no-plot")) == 0
    history = json.loads((backup / "history.json").read_text())
    assert all(len(values) == 3 and 9.5 not in values for values in history.values())
    assert logged_epochs(backup) == [0, 1, 2]


def test_restart_discards_a_backup_even_of_another_configuration(backup, data, capsys):
    argv = ["--epochs", "1", "--limit", "400", "--data-dir", str(data),
            "--output-dir", str(backup), "--restart", "--no-plot"]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "Resuming" not in printed
    assert f"Starting at epoch 1: --restart discards the backup in {backup}/backup." in printed
    history = json.loads((backup / "history.json").read_text())
    assert all(len(values) == 1 for values in history.values())
    assert logged_epochs(backup) == [0]


@pytest.mark.parametrize("made_under, flags, difference", [
    ({}, ["--distribute", "mirrored", "--cpu-devices", "2"],
     "distribute None -> 'mirrored', replicas 1 -> 2"),
    # config.json records what a backup was made under: here 3 replicas, --sync-bn
    ({"distribute": "mirrored", "replicas": 3, "sync_bn": True},
     ["--distribute", "mirrored", "--cpu-devices", "2"], "replicas 3 -> 2, sync_bn True -> False"),
], ids=["distribute", "replicas-and-sync-bn"])
def test_backup_of_another_distribution_is_refused(made_under, flags, difference, backup, data):
    saved = json.loads((backup / "backup" / "config.json").read_text())
    (backup / "backup" / "config.json").write_text(json.dumps({**saved, **made_under}))
    before = snapshot(backup)
    # A process of its own: the logical devices must be set before TensorFlow starts.
    done = run_script(*command(data, backup, *flags))
    assert done.returncode == 1
    assert error_lines(done.stderr) == [
        f"error: {backup} holds the backup of a different run ({difference}): "
        "add --restart to discard it, or choose another --output-dir"]
    assert snapshot(backup) == before


def test_a_logged_epoch_without_a_backup_starts_over_and_says_why(backup, data, capsys):
    # Stopped between the log and the first backup: one row, no training_metadata.json.
    (backup / "backup" / "training_metadata.json").unlink()
    assert len(logged_epochs(backup)) == 1
    assert cli(command(data, backup, "--no-plot")) == 0
    printed = capsys.readouterr().out
    assert "Resuming" not in printed
    assert (f"Starting at epoch 1: {backup}/history.csv logs an epoch that no backup holds "
            "(the run was stopped between the two)." in printed)
    assert logged_epochs(backup) == [0, 1, 2]
