"""Faults a careful user or a cluster scheduler meets: every one ends with
nothing lost and one clear line. Each runs the script as a separate process where the
fault needs one (a signal, a second process, a full disk); expected lines come from
the README's table of faults."""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

import stop_at
from testdata import synthetic
from conftest import (ROOT, as_from_a_terminal, cli, error_lines, stopped_after_first_epoch,
                      wait_for_first_backup)

QUICK = ["--epochs", "2", "--batch-size", "100", "--verbose", "2", "--no-plot"]
# 48 steps per epoch (of 3000 images, batch 50): a signal lands inside an epoch.
SLOW = ["--batch-size", "50", "--verbose", "2", "--no-plot"]


@pytest.fixture(scope="module")
def slow_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=3000, test=100))
    return folder


def child(*args, limit_file_size=None, after_training=None):
    """The script as a user's process. limit_file_size: the largest file it may write
    (a full disk, without root); after_training: the same limit, set when the script
    predicts the test images, once training has ended (fit never predicts): the disk
    fills while the results are saved."""
    setup = ["import resource, runpy, signal, sys"]
    if limit_file_size or after_training:
        setup.append("signal.signal(signal.SIGXFSZ, signal.SIG_IGN)")  # EFBIG, not death
        setup.append("full = lambda size: resource.setrlimit(resource.RLIMIT_FSIZE, "
                     "(size, resource.RLIM_INFINITY))")
    if limit_file_size:
        setup.append(f"full({limit_file_size})")
    if after_training:
        setup += ["import keras", "predict = keras.Model.predict",
                  "keras.Model.predict = lambda *a, **k: "
                  f"(full({after_training}), predict(*a, **k))[1]"]
    setup += [f"sys.argv = ['model_batchnorm.py', *{list(map(str, args))!r}]",
              "runpy.run_path('model_batchnorm.py', run_name='__main__')"]
    return subprocess.Popen(
        [sys.executable, "-c", "\n".join(setup)], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=as_from_a_terminal,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})


def snapshot(folder):
    """Every file under folder with a hash of its bytes: proof that nothing was touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(stderr):
    lines = error_lines(stderr)
    assert len(lines) == 1, stderr
    return lines[0]


def epochs_done(out):
    return json.loads((out / "backup" / "training_metadata.json").read_text())["epoch"]


@pytest.fixture(scope="module")
def finished(data_dir_module):
    """A finished run of the script, as a user's first `python model_batchnorm.py`."""
    out = data_dir_module.parent / "finished"
    assert cli(["--data-dir", str(data_dir_module), "--output-dir", str(out), *QUICK]) == 0
    return out


@pytest.fixture(scope="module")
def data_dir_module(tmp_path_factory):
    folder = tmp_path_factory.mktemp("faults-small") / "data"
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=600, test=100))
    return folder


def test_a_finished_run_is_refused_not_overwritten(finished, data_dir_module, capsys):
    before = snapshot(finished)
    code = cli(["--epochs", "1", "--limit", "300", "--data-dir", str(data_dir_module),
                "--output-dir", str(finished), "--no-plot"])
    assert code == 1
    line = one_error_line(capsys.readouterr().err)
    assert "holds a finished run" in line and "model.keras" in line
    assert "--overwrite" in line and "--output-dir" in line
    assert snapshot(finished) == before


def test_overwrite_replaces_only_the_scripts_own_finished_run(
        finished, data_dir_module, tmp_path, capsys):
    out = tmp_path / "again"
    shutil.copytree(finished, out)
    code = cli(["--epochs", "1", "--limit", "300", "--data-dir", str(data_dir_module),
                "--output-dir", str(out), "--no-plot", "--overwrite"])
    assert code == 0, capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert run["epochs_completed"] == 1 and run["train_images"] == 240
    assert not (out / "backup").exists()


def test_a_folder_with_files_of_the_users_own_is_never_touched(data_dir_module, tmp_path,
                                                                capsys):
    out = tmp_path / "theirs"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "notes.txt").write_text("my backup")
    (out / "history.csv").write_text("my,own\n1,2\n")
    (out / "model.keras").write_text("my model")
    before = snapshot(out)
    for extra in ([], ["--overwrite"], ["--restart"]):
        code = cli(["--data-dir", str(data_dir_module), "--output-dir", str(out), *QUICK,
                    *extra])
        assert code == 1
        line = one_error_line(capsys.readouterr().err)
        assert "backup" in line and "history.csv" in line and "model.keras" in line
        assert "--output-dir" in line
        assert snapshot(out) == before
        assert sorted(p.name for p in out.iterdir()) == ["backup", "history.csv", "model.keras"]


def test_a_failed_first_attempt_leaves_a_folder_the_next_attempt_accepts(
        data_dir_module, empty_cache, tmp_path, capsys):
    out = tmp_path / "outputs"
    assert cli(["--output-dir", str(out), *QUICK]) == 1  # offline: the download fails
    assert "could not download" in one_error_line(capsys.readouterr().err)
    assert cli(["--data-dir", str(data_dir_module), "--output-dir", str(out), *QUICK]) == 0


def test_a_second_run_on_the_same_folder_is_refused_and_no_lock_outlives_a_kill(
        slow_data, tmp_path, capsys):
    out = tmp_path / "shared"
    argv = ["--epochs", "3", "--data-dir", slow_data, "--output-dir", out, *SLOW]
    # The first run stops itself (SIGSTOP, tests/stop_at.py) once epoch 1 is backed up:
    # it holds the folder for as long as the test needs, however slow the machine.
    first = subprocess.Popen(
        stop_at.command("SIGSTOP", "after:machinery.backup.Backup.on_epoch_end", *argv),
        cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_first_backup(first, out)
        assert cli(list(map(str, argv))) == 1
        line = one_error_line(capsys.readouterr().err)
        assert "another run" in line and f"PID {first.pid}" in line
        assert "--output-dir" in line
    finally:
        first.kill()
        first.communicate(timeout=60)
    assert epochs_done(out) == 1
    # SIGKILL left no lock behind: the same command resumes at once.
    assert cli(list(map(str, argv))) == 0, capsys.readouterr().err
    assert "1 epoch(s) already done" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [3, 3, 3, 3]


@pytest.fixture(scope="module")
def terminated(slow_data, tmp_path_factory):
    """A run stopped by SIGTERM, as `timeout`, systemd, Slurm or Kubernetes stop one."""
    out = tmp_path_factory.mktemp("terminated") / "run"
    process = child("--epochs", "30", "--data-dir", slow_data, "--output-dir", out, *SLOW)
    code, _, stderr = stopped_after_first_epoch(process, out, signal.SIGTERM)
    return out, code, stderr


@pytest.fixture
def backup_copy(terminated, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(terminated[0], out)
    return out


def test_sigterm_is_handled_like_ctrl_c(terminated):
    out, code, stderr = terminated
    assert code == 143, stderr
    assert "Traceback" not in stderr
    history = json.loads((out / "history.json").read_text())
    completed = len(history["loss"])
    assert completed >= 1
    assert f"Terminated (SIGTERM) after {completed} completed epoch(s)" in stderr
    assert str(out / "history.json") in stderr and "resume" in stderr
    assert epochs_done(out) == completed


def test_the_run_after_sigterm_resumes(backup_copy, slow_data, capsys):
    done = epochs_done(backup_copy)
    assert cli(["--epochs", str(done + 1), "--data-dir", str(slow_data),
                "--output-dir", str(backup_copy), *SLOW]) == 0
    assert f"{done} epoch(s) already done" in capsys.readouterr().out
    history = json.loads((backup_copy / "history.json").read_text())
    assert len(history["loss"]) == done + 1


def largest_file(folder):
    """The backup's weights: by far its largest file."""
    return max((p for p in folder.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)


def damage_weights_deleted(out):
    largest_file(out / "backup").unlink()


def damage_weights_truncated(out):
    weights = largest_file(out / "backup")
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


def damage_metadata_empty(out):
    (out / "backup" / "training_metadata.json").write_text("")


def damage_log_row_missing_and_a_bad_line(out):
    log = out / "history.csv"
    lines = log.read_text().splitlines(True)
    log.write_text(lines[0] + "garbage,,\n" + "".join(lines[2:]))


@pytest.mark.parametrize("damage", [damage_weights_deleted, damage_weights_truncated,
                                    damage_metadata_empty,
                                    damage_log_row_missing_and_a_bad_line])
def test_a_damaged_backup_is_one_line_offering_restart(backup_copy, slow_data, damage, capsys):
    damage(backup_copy)
    before = snapshot(backup_copy)
    argv = ["--epochs", "30", "--data-dir", str(slow_data), "--output-dir", str(backup_copy),
            *SLOW]
    assert cli(argv) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "backup" in line and "--restart" in line
    assert snapshot(backup_copy) == before


@pytest.mark.parametrize("change", [["--fast"], ["--limit", "2000"], ["--seed", "4"]])
def test_resuming_with_a_setting_that_changes_training_is_refused(
        backup_copy, slow_data, change, capsys):
    before = snapshot(backup_copy)
    assert cli(["--epochs", "30", "--data-dir", str(slow_data), "--output-dir",
                str(backup_copy), *SLOW, *change]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "different run" in line and "--restart" in line
    assert snapshot(backup_copy) == before


def test_resuming_onto_other_data_is_refused(backup_copy, tmp_path, capsys):
    other = tmp_path / "other-data"
    synthetic.write(synthetic.folder_paths(other),
                    synthetic.make_arrays(train=3000, test=100, seed=9))
    assert cli(["--epochs", "30", "--data-dir", str(other), "--output-dir",
                str(backup_copy), *SLOW]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "other data" in line and "--restart" in line


def test_a_disk_that_fills_while_the_results_are_saved_loses_no_epoch(
        data_dir_module, tmp_path, capsys):
    out = tmp_path / "full"
    argv = ["--data-dir", data_dir_module, "--output-dir", out, *QUICK]
    # 100 kB: history.json fits, model.keras (5 MB) does not.
    process = child(*argv, after_training=100_000)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 1
    line = one_error_line(stderr)
    assert "model.keras" in line and "File too large" in line
    assert not list(out.rglob("*partial*"))
    assert epochs_done(out) == 2  # the backup is kept
    # The same command, with room again, trains no epoch and writes the results.
    assert cli(list(map(str, argv))) == 0, capsys.readouterr().err
    stdout = capsys.readouterr().out
    assert "2 epoch(s) already done" in stdout and "Epoch " not in stdout
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [2, 2, 2, 2]
    assert (out / "model.keras").exists() and not (out / "backup").exists()


def test_a_disk_that_fills_at_the_first_backup_is_one_line(data_dir_module, tmp_path):
    out = tmp_path / "full"
    process = child("--data-dir", data_dir_module, "--output-dir", out, *QUICK,
                    limit_file_size=1_000_000)
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 1, stderr  # not a crash (-11)
    line = one_error_line(stderr)
    assert str(out / "backup") in line and "File too large" in line
    assert not list(out.rglob("*partial*"))
