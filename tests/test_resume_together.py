"""How the workers of a --distribute multiworker run agree on the epoch they resume from,
what a backup keeps for that, and which failures are a lost worker (docs/distributed.md).
In-process, with the workers' answers given: tests/test_workers.py runs real workers."""
import json

import keras
import numpy as np
import pytest

from machinery import backup, distribute, resume
from machinery.errors import ScriptError
from machinery.quiet import tf
from test_distribute import WORKERS, FakeMultiWorker
from test_error_rows import check_raised

WANTED = {"dataset": "kmnist", "batch_size": 50}


def agree(monkeypatch, rows, mine=(2, 1)):
    """agreed_epoch on worker 0 when the workers answer `rows`: (ok, latest, earliest)."""
    settings = [(row[3] if len(row) > 3 else 7) for row in rows]
    monkeypatch.setattr(distribute, "gather_from_workers", lambda strategy, values: [
        [1, task, *row[:3], setting] for task, (row, setting) in enumerate(zip(rows, settings))])
    return resume.agreed_epoch(FakeMultiWorker(WORKERS, "worker", 0), mine, WANTED)


@pytest.mark.parametrize("rows, epoch", [
    ([(1, 2, 1), (1, 2, 1)], 2),  # killed together: both hold epoch 2
    ([(1, 2, 1), (1, 1, 0)], 1),  # killed as worker 1 saved epoch 2: both keep epoch 1
    ([(1, 1, 0), (1, 0, 0)], 0),  # worker 1 never saved: both start at epoch 1
])
def test_workers_resume_from_the_latest_epoch_every_backup_keeps(rows, epoch, monkeypatch):
    assert agree(monkeypatch, rows) == epoch


def refusal(monkeypatch, rows):
    """The one line and exit code the workers stop with, as the command line shows it."""
    with pytest.raises(ScriptError) as refused:
        agree(monkeypatch, rows)
    return f"error: {refused.value}", refused.value.code


def test_backups_without_a_common_epoch_stop_every_worker_in_one_line(monkeypatch):
    check_raised("the workers of `--distribute multiworker` restarted with backups",
                 refusal(monkeypatch, [(1, 3, 2), (1, 1, 0)]))


def test_a_worker_that_cannot_resume_stops_the_others_naming_it(monkeypatch):
    check_raised("one worker's backup refused", refusal(monkeypatch, [(1, 2, 1), (0, 0, 0)]))


def test_workers_started_with_different_settings_are_refused(monkeypatch):
    check_raised("the workers of `--distribute multiworker` started with other flags",
                 refusal(monkeypatch, [(1, 0, 0, 7), (1, 0, 0, 8)]))


def tiny_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


def test_the_backup_keeps_the_previous_epoch_and_can_go_back_to_it(tmp_path):
    model, folder = tiny_model(), tmp_path / "backup"
    first = [np.full(w.shape, 1.0) for w in model.get_weights()]
    model.set_weights(first)
    backup.save(model, folder, 1)
    model.set_weights([np.full(w.shape, 2.0) for w in first])
    backup.save(model, folder, 2)
    model.set_weights([np.full(w.shape, 3.0) for w in first])
    backup.save(model, folder, 3)
    assert sorted(p.name for p in folder.glob("*.npz")) == ["epoch-2.npz", "epoch-3.npz"]
    backup.roll_back(folder, 2)
    assert json.loads((folder / backup.METADATA).read_text())["epoch"] == 2
    assert backup.load(model, folder, None) == 2
    assert all((w == 2.0).all() for w in model.get_weights())


UNAVAILABLE = tf.errors.UnavailableError(
    None, None, "Collective ops is aborted by: Error reported from /job:worker/task:1: The "
                "following tasks are unhealthy (stopped sending heartbeats):\n"
                "/job:worker/replica:0/task:1\nThe tasks have crashed.")


def test_a_collective_aborted_for_a_lost_peer_is_one_line_naming_it():
    error = distribute.lost_worker(UNAVAILABLE, FakeMultiWorker(WORKERS, "worker", 0))
    assert str(error) == ("lost contact with worker 1 (UnavailableError): start every "
                          "worker again with the same command: they resume from their backups")


@pytest.mark.parametrize("error, strategy", [
    (tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2] vs. [3]"),
     FakeMultiWorker(WORKERS, "worker", 0)),  # a bug: its traceback stays
    (UNAVAILABLE, None),  # not a multi-worker run
], ids=["bug", "single-process"])
def test_other_errors_are_not_a_lost_worker(error, strategy):
    assert distribute.lost_worker(error, strategy) is None
