"""Where a run resumes: the backup in its output folder (backup.py), checked against the
log (history.csv), the run's settings and its data, or under --distribute multiworker the
epoch every worker holds. A backup that disagrees is refused with one line."""
import csv
import hashlib
import json
import shutil

from machinery import backup, distribute, files
from machinery.errors import ScriptError

# What a backup must share with this run to be resumed by it (every setting that
# changes what training computes), in the order an error names the differences.
MUST_MATCH = ("dataset", "data_sha256", "batchnorm", "batch_size", "validation_split",
              "limit", "fast", "seed", "distribute", "replicas", "sync_bn", "bn_momentum",
              "track_batch_stats", "precision", "learning_rate", "network_name")
# What a key missing from an older backup's config.json meant.
BEFORE_THE_KEY = {"precision": "float32", "network_name": None}


def read_history_csv(path):
    """The per-epoch log as a History.history-style dict of lists."""
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [key for key in (rows[0] if rows else {}) if key != "epoch"]
    return {key: [float(row[key]) for row in rows] for key in keys}


def keep_first_rows(path, count):
    """Drop log rows of epochs the backup does not hold (killed between log and backup)."""
    if not path.exists():
        return
    with open(path, newline="") as f:
        lines = f.read().splitlines(True)
    if len(lines) > count + 1:
        kept = "".join(lines[: count + 1])
        files.write_atomically(path, lambda partial: partial.write_text(kept))


def resume_key(run):
    """The settings a backup must match, as its config.json holds them."""
    return {key: getattr(run, key) for key in MUST_MATCH}


def differences(saved, wanted):
    """What differs, flag by flag; the data's hash only where no flag explains it (another
    --dataset or --limit changes the arrays too, and naming the flag says more)."""
    saved = {**BEFORE_THE_KEY, **saved}
    changed = [f"{key} {saved.get(key)!r} -> {value!r}" for key, value in wanted.items()
               if key != "data_sha256" and saved.get(key) != value]
    if not changed and saved.get("data_sha256") != wanted["data_sha256"]:
        changed.append("other data (the arrays' SHA-256 differs)")
    return changed


def start_fresh(folder, log, wanted, why=None):
    """Delete this run's old backup and log (folder.claimed checked) and begin anew."""
    if why:
        print(f"Starting at epoch 1: {why}.")
    shutil.rmtree(folder, ignore_errors=True)
    log.unlink(missing_ok=True)
    folder.mkdir(parents=True)
    files.write_json(folder / files.BACKUP_CONFIG, wanted)
    return 0


def backup_epochs(out, wanted, restart=False):
    """The epochs the backup in `out` holds (backup.verify); 0 for a new one (--restart)."""
    folder, log = out / files.BACKUP_DIR, out / files.HISTORY_CSV
    if restart:
        return start_fresh(folder, log, wanted, (folder / backup.METADATA).exists()
                           and f"--restart discards the backup in {folder}")
    if not (folder / backup.METADATA).exists():
        # One logged epoch without a backup is a kill between the two; more is damage.
        logged = backup.logged_epochs(log, folder, needed=1) if log.exists() else []
        if len(logged) > 1:
            raise backup.damaged(folder, f"{backup.METADATA} is missing but {log.name} "
                                         f"logs {len(logged)} epochs")
        return start_fresh(folder, log, wanted, logged and (
            f"{log} logs an epoch that no backup holds (the run was stopped between the two)"))
    try:
        saved = json.loads((folder / files.BACKUP_CONFIG).read_text())
    except (OSError, ValueError) as err:
        raise backup.damaged(folder, f"{files.BACKUP_CONFIG} is unreadable: {err}") from None
    changed = differences(saved, wanted)
    if changed:
        raise ScriptError(
            f"{out} holds the backup of a different run ({', '.join(changed)}): "
            "add --restart to discard it, or choose another --output-dir"
        )
    return backup.verify(folder, log)


def earliest_epoch(folder, latest):
    """The earliest epoch the backup can resume from: its previous state's (0 after one)."""
    previous = backup.previous_epoch(folder) if latest else None
    return 0 if latest == 1 else (previous or latest)


def worker_names(rows):
    return [f"{'chief' if row[0] == 0 else 'worker'} {row[1]}" for row in rows]


def agreed_epoch(strategy, epochs, wanted):
    """The epoch every worker resumes from: the same on all, or the same one-line error on
    all. `epochs` is this worker's (latest, earliest) epoch, or None if it failed."""
    if not distribute.is_multiworker(strategy):
        return epochs and epochs[0]
    resolver, settings = strategy.cluster_resolver, json.dumps(wanted, sort_keys=True)
    rows = distribute.gather_from_workers(strategy, [
        0 if resolver.task_type == "chief" else 1, resolver.task_id, int(epochs is not None),
        *(epochs or (0, 0)), int(hashlib.sha256(settings.encode()).hexdigest()[:15], 16)])
    names = worker_names(rows)
    failed = [name for name, row in zip(names, rows) if not row[2]]
    if epochs is None:
        return None  # this worker raises its own error
    if failed:
        raise ScriptError(f"{', '.join(failed)} cannot resume its backup (its own error line "
                          f"says why): fix that, then {distribute.RERUN}")
    if len({row[5] for row in rows}) > 1:
        raise ScriptError("the workers were started with different settings or data: start "
                          "every worker with the same command and the same data")
    common = min(row[3] for row in rows)
    if any(row[4] > common for row in rows):
        held = ", ".join(f"{name}: {row[3]}" for name, row in zip(names, rows))
        raise ScriptError(f"the workers' backups hold different epochs ({held}) and no epoch "
                          "is kept by all: add --restart on every worker to start at epoch 1")
    return common


def settle(out, wanted, latest, epochs_done):
    """Make the backup hold `epochs_done` epochs (the workers' common epoch) and say so."""
    folder, log = out / files.BACKUP_DIR, out / files.HISTORY_CSV
    if epochs_done == 0:
        return start_fresh(folder, log, wanted) if latest else 0
    if epochs_done < latest:
        backup.roll_back(folder, epochs_done)
    keep_first_rows(log, epochs_done)
    print(f"Resuming from the backup in {folder}: {epochs_done} epoch(s) already done "
          "(add --restart to start over).")
    return epochs_done


def start_or_resume(run):
    """The epochs training resumes after: all the backup holds, or under --distribute
    multiworker those every worker holds."""
    out, wanted = run.output_dir, resume_key(run)
    try:
        latest = backup_epochs(out, wanted, run.restart)
    except ScriptError:
        agreed_epoch(run.strategy, None, wanted)  # the other workers must not wait for this one
        raise
    epochs = (latest, earliest_epoch(out / files.BACKUP_DIR, latest))
    return settle(out, wanted, latest, agreed_epoch(run.strategy, epochs, wanted))


def backed_up_history(out):
    """The log's rows of the epochs the backup holds: what an interrupted run reports."""
    epochs = backup.saved_epochs(out / files.BACKUP_DIR)
    history = read_history_csv(out / files.HISTORY_CSV)
    return {key: values[:epochs] for key, values in history.items()}
