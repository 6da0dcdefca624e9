"""The backup after each completed epoch: the model's and the optimizer's variables as
plain .npz bytes written whole, checked before they are trusted, removed only once every
output is written. Keras' BackupAndRestore falls back to an older copy on its own, writes
HDF5 straight to disk (a full disk crashed h5py) and deletes itself at the end of fit."""
import contextlib
import csv
import hashlib
import io
import json
import re

import numpy as np

from machinery import files, keras_internals
from machinery.errors import ScriptError
from machinery.files import BACKUP_METADATA as METADATA
from machinery.quiet import keras

STATE = re.compile(r"epoch-(\d+)\.npz")


def damaged(folder, problem):
    return ScriptError(f"the backup in {folder} cannot be trusted ({problem}): add --restart "
                       "to discard it and start at epoch 1, or choose another --output-dir")


def variables(model):
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return list(model.weights) + list(optimizer.variables)


def save(model, folder, epochs):
    """State, then the metadata naming it and its hash, then older states go: whatever a
    kill interrupts, the metadata names a whole state. The previous epoch's stays, so that
    workers killed one epoch apart can resume from the same one (resume.agreed_epoch)."""
    buffer = io.BytesIO()
    np.savez(buffer, *[np.asarray(v) for v in variables(model)])
    data, name = buffer.getvalue(), f"epoch-{epochs}.npz"
    folder.mkdir(exist_ok=True)
    files.write_atomically(folder / name, lambda partial: partial.write_bytes(data))
    previous = None
    if (folder / METADATA).exists():
        with contextlib.suppress(ScriptError):
            read_metadata(folder)  # only a whole state is kept as the previous one
            previous = {key: value for key, value in json.loads(
                (folder / METADATA).read_text()).items() if key != "previous"}
    files.write_json(folder / METADATA, {"epoch": epochs, "state": name, "bytes": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest(),
                                           "previous": previous})
    kept = {name, previous and previous["state"]}
    remove_states_but(folder, kept)


def remove_states_but(folder, kept):
    for old in folder.iterdir():
        if STATE.fullmatch(old.name) and old.name not in kept:
            old.unlink()


def from_metadata(folder, read, default):
    """read(the metadata), or `default` for a backup not written yet or cut short."""
    try:
        return read(json.loads((folder / METADATA).read_text()))
    except (OSError, ValueError, KeyError, TypeError):
        return default


def saved_epochs(folder):
    """The epoch count the backup's metadata names; 0 where there is none (yet)."""
    return from_metadata(folder, lambda metadata: int(metadata["epoch"]), 0)


def read_metadata(folder, epoch=None):
    """(epoch count, state bytes) of the latest backup, or of the previous if `epoch`."""
    try:
        metadata = json.loads((folder / METADATA).read_text())
        if epoch is not None and epoch != metadata["epoch"] and metadata.get("previous"):
            metadata = metadata["previous"]
        epochs, name = metadata["epoch"], metadata["state"]
        expected = (metadata["bytes"], metadata["sha256"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise damaged(folder, f"{METADATA} is unreadable: {type(err).__name__}: {err}") from None
    if not (isinstance(epochs, int) and epochs >= 1 and STATE.fullmatch(str(name))):
        raise damaged(folder, f"{METADATA} holds no valid epoch count and state file")
    if epoch is not None and epoch != epochs:
        raise damaged(folder, f"it holds no state of epoch {epoch}")
    try:
        data = (folder / name).read_bytes()
    except OSError as err:
        raise damaged(folder, f"{name}: {err.strerror}") from None
    if (len(data), hashlib.sha256(data).hexdigest()) != tuple(expected):
        raise damaged(folder, f"{name} is truncated or changed since epoch {epochs}")
    return epochs, data


def previous_epoch(folder):
    """The epoch of the previous state the backup keeps, or None."""
    return from_metadata(folder, lambda metadata: metadata["previous"]["epoch"], None)


def roll_back(folder, epoch):
    """Make the previous state, of `epoch`, the latest: every worker resumes from it."""
    read_metadata(folder, epoch)  # whole, or the backup cannot be trusted
    metadata = {**json.loads((folder / METADATA).read_text())["previous"], "previous": None}
    files.write_json(folder / METADATA, metadata)
    remove_states_but(folder, {metadata["state"]})


def logged_epochs(log, folder, needed=None):
    """history.csv's epoch column; its first `needed` rows (None: all) must be whole, a row
    after them may have been cut short by a kill."""
    try:
        with open(log, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, ValueError, csv.Error) as err:
        raise damaged(folder, f"{log.name} is unreadable: {type(err).__name__}: {err}") from None
    epochs = []
    for number, row in enumerate(rows, start=1):
        try:
            epochs.append(int(row["epoch"]))
            for value in row.values():
                float(value)  # a short row holds None: TypeError
        except (ValueError, TypeError, KeyError) as err:
            if needed is not None and number > needed:
                return epochs[:needed]
            raise damaged(folder, f"{log.name} row {number} is unreadable: "
                                  f"{type(err).__name__}: {err}") from None
    return epochs


def verify(folder, log):
    """The epochs the backup holds, once its metadata, its state and the log agree: rows
    for epochs 1..N in order (the caller drops a row after N, left by a kill)."""
    epochs, _ = read_metadata(folder)
    logged = logged_epochs(log, folder, epochs) if log.exists() else []
    if logged[:epochs] != list(range(epochs)):
        raise damaged(folder, f"it holds {epochs} epoch(s) but {log.name} logs epochs "
                              f"{[e + 1 for e in logged]}")
    return epochs


def load(model, folder, steps, epoch=None):
    """Restore the variables (latest, or of `epoch`); checks `steps` steps per epoch."""
    epochs, data = read_metadata(folder, epoch)
    targets = variables(model)
    with np.load(io.BytesIO(data), allow_pickle=False) as state:
        arrays = [state[f"arr_{i}"] for i in range(len(state.files))]
    if [a.shape for a in arrays] != [tuple(v.shape) for v in targets]:
        raise damaged(folder, "its variables do not fit this model")
    for variable, array in zip(targets, arrays):
        variable.assign(array)
    taken = int(np.asarray(model.optimizer.iterations))  # also a distributed variable
    if steps is not None and taken != epochs * steps:
        raise damaged(folder, f"the optimizer took {taken} steps, not {epochs} epoch(s) "
                              f"of {steps}")
    return epochs


class Backup(keras.callbacks.Callback):
    """Restores epoch `resume_at` (if any) as fit begins; saves after each epoch."""

    def __init__(self, folder, resume_at):
        super().__init__()
        self.folder, self.resume_at = folder, resume_at

    def on_train_begin(self, logs=None):
        if self.resume_at:
            keras_internals.start_fit_at(
                self.model, load(self.model, self.folder, self.params.get("steps"),
                                 self.resume_at))

    def on_epoch_end(self, epoch, logs=None):
        save(self.model, self.folder, epoch + 1)
