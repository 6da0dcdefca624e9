"""The table of docs/troubleshooting.md, line for line: each bad input gets exactly the
line the table shows (its paths replaced by this test's), and the exit code it shows.

The expected lines are read from docs/troubleshooting.md itself, so the page and the program cannot
drift apart. In the table, `...` and `[...]` stand for text that varies (a URL, a list of
names), `<file>` for the file's path and `<fix>` for the advice the page defines below
the table. Two rows need a backup and a killed run; tests/test_resume.py checks them
against this table with readme_row(). The rows of the output folder and its backup
(a finished run, files of the user's, a second run, a damaged backup, a full disk,
SIGTERM) are checked here in-process: the fault is made by the test (a lock it holds,
a write it fails, a signal it sends itself) rather than by a second process.
"""
import contextlib
import errno
import io
import json
import os
import re
import shutil
import signal
import socket
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import KERAS_HOME, ROOT, cli, error_lines
from machinery import backup, folder, signals
from testdata import synthetic


def readme_section():
    text = (ROOT / "docs" / "troubleshooting.md").read_text()
    return text.split("\n## When things go wrong\n", 1)[1].split("\n## ", 1)[0]


def readme_table():
    """{input cell: ([each `message` of the 'what you see' cell], exit code)}; the
    table's columns are input, what you see, exit code and what is kept."""
    rows = {}
    for line in readme_section().splitlines():
        match = re.fullmatch(r"\| (.+?) \| (.+?) \| (\d+) \| [^|]+ \|", line)
        if match:
            rows[match.group(1)] = (re.findall(r"`([^`]+)`", match.group(2)),
                                    int(match.group(3)))
    return rows


def readme_row(starts_with):
    """The messages and exit code of the one table row whose input cell starts so."""
    found = [row for cell, row in readme_table().items() if cell.startswith(starts_with)]
    assert len(found) == 1, (starts_with, list(readme_table()))
    return found[0]


def readme_fixes():
    """What the page says `<fix>` stands for: {'cache': ..., 'data_dir': ...}."""
    prose = " ".join(readme_section().split())
    match = re.search(r'`<fix>` is "([^"]+)" for a file in the Keras cache, and "([^"]+)" '
                      r"for one in `--data-dir`", prose)
    assert match, "docs/troubleshooting.md does not define <fix>"
    return {"cache": match.group(1), "data_dir": match.group(2)}


def assert_whole_line(template, line, **substitutions):
    """`line` is `template` with the substitutions made, `...` standing for any text."""
    for old, new in substitutions.items():
        assert old in template, (old, template)
        template = template.replace(old, str(new))
    pattern = ".*".join(re.escape(part) for part in template.split("..."))
    assert re.fullmatch(pattern, line), f"\ndocs:   {template}\nactual: {line}"


def error_output(capsys, argv):
    """Exit code and every line on stderr (a one-line error has exactly one)."""
    code = cli([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err.splitlines()


def check_row(capsys, row, argv, **substitutions):
    messages, exit_code = readme_row(row)
    template = messages[0]
    code, lines = error_output(capsys, argv)
    assert code == exit_code
    assert len(lines) == 1, lines
    assert_whole_line(template, lines[0], **substitutions)


@pytest.mark.parametrize("flag", ["--epochs", "--batch-size", "--limit"])
@pytest.mark.parametrize("value", ["0", "two", "2.5"])
def test_not_a_whole_number_above_0(flag, value, capsys, tmp_path):
    # The row names --epochs 0 and, in its input cell, the other values and flags.
    check_row(capsys, "`--epochs 0`", [flag, value, "--output-dir", tmp_path],
              **{"--epochs": flag, "'0'": f"'{value}'"})


@pytest.mark.parametrize("value", ["1.5", "0", "1", "abc"])
def test_validation_split_outside_0_and_1(value, capsys, tmp_path):
    check_row(capsys, "`--validation-split 1.5`",
              ["--validation-split", value, "--output-dir", tmp_path],
              **{"'1.5'": f"'{value}'"})


def test_compare_with_no_batchnorm(capsys, tmp_path):
    check_row(capsys, "`--compare --no-batchnorm`",
              ["--compare", "--no-batchnorm", "--output-dir", tmp_path])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("value", ["0", "-1", "abc"])
def test_learning_rate_not_above_0(value, capsys, tmp_path):
    check_row(capsys, "`--learning-rate 0`", ["--learning-rate", value, "--output-dir", tmp_path],
              **{"'0'": f"'{value}'"})
    assert list(tmp_path.iterdir()) == []


def test_several_learning_rates_without_compare(capsys, tmp_path):
    check_row(capsys, "several `--learning-rate` values",
              ["--learning-rate", "0.001", "0.01", "--output-dir", tmp_path])
    assert list(tmp_path.iterdir()) == []


def test_the_same_learning_rate_twice(capsys, tmp_path):
    check_row(capsys, "the same `--learning-rate` (or `--batch-size`) twice",
              ["--compare", "--learning-rate", "0.01", "0.010", "--output-dir", tmp_path])


def test_the_same_batch_size_twice(capsys, tmp_path):
    check_row(capsys, "the same `--learning-rate` (or `--batch-size`) twice",
              ["--compare", "batch-size", "--batch-size", "16", "16", "--output-dir", tmp_path],
              **{"--learning-rate 0.01": "--batch-size 16"})


def test_several_batch_sizes_without_compare_batch_size(capsys, tmp_path):
    check_row(capsys, "several `--batch-size` values",
              ["--compare", "--batch-size", "16", "64", "--output-dir", tmp_path])
    assert list(tmp_path.iterdir()) == []


def test_compare_batch_size_with_one_other_batch_size(capsys, tmp_path):
    check_row(capsys, "`--compare batch-size` with one `--batch-size`",
              ["--compare", "batch-size", "--batch-size", "32", "--output-dir", tmp_path])


@pytest.mark.parametrize("question", ["placement", "gamma-beta", "normalization"])
def test_layer_inputs_with_a_comparison_of_other_layers(question, capsys, tmp_path):
    check_row(capsys, "`--track-layer-inputs` (or `--layer-inputs-of`) with `--compare",
              ["--compare", question, "--track-layer-inputs", "--output-dir", tmp_path],
              **{"--compare placement": f"--compare {question}"})


@pytest.mark.parametrize("flag, value", [("--layer-inputs-of", "dense_9"),
                                         ("--dataset", "cifar"), ("--precision", "float16")])
def test_a_value_a_flag_does_not_take(flag, value, capsys, tmp_path):
    check_row(capsys, "a value a flag does not take", [flag, value, "--output-dir", tmp_path],
              **{"<flag>": flag, "<value>": f"'{value}'"})
    assert list(tmp_path.iterdir()) == []


def test_redownload_with_data_dir_is_refused(capsys, tmp_path):
    check_row(capsys, "`--redownload` with `--data-dir`",
              ["--redownload", "--data-dir", tmp_path, "--output-dir", tmp_path / "out"])
    assert list(tmp_path.iterdir()) == []


def test_an_option_the_script_does_not_know(capsys, tmp_path):
    check_row(capsys, "an option the script does not know",
              ["--epohcs", "3", "--output-dir", tmp_path])


def test_a_flag_without_its_value(capsys):
    check_row(capsys, "a flag without its value", ["--epochs"])


def test_a_flag_of_several_values_with_none(capsys):
    check_row(capsys, "`--learning-rate` with no rate after it", ["--learning-rate"])


def test_a_refused_run_leaves_no_folder_it_made(capsys, data_dir, tmp_path):
    # The table says "nothing was written": not even the output folder the run made.
    out = tmp_path / "new" / "run"
    assert cli(["--limit", "1", "--data-dir", str(data_dir), "--output-dir", str(out)]) == 1
    assert error_lines(capsys.readouterr().err)  # the one line (the row's own test checks it)
    assert not (tmp_path / "new").exists()


def test_output_folder_that_cannot_be_written(capsys, empty_cache, tmp_path):
    blocker = tmp_path / "passwd"
    blocker.write_text("a file, not a folder")
    check_row(capsys, "`--output-dir` that cannot", ["--output-dir", blocker / "out"],
              **{"/etc/passwd/out": blocker / "out"})
    assert blocker.read_text() == "a file, not a folder"


def test_data_dir_that_does_not_exist(capsys, tmp_path):
    check_row(capsys, "`--data-dir` that does not exist",
              ["--dry-run", "--data-dir", tmp_path / "none", "--output-dir", tmp_path / "out"],
              **{"/data/none": tmp_path / "none"})


def test_data_dir_lacking_a_file(capsys, data_dir, tmp_path):
    (data_dir / "kmnist-test-labels.npz").unlink()
    check_row(capsys, "`--data-dir` lacking a file",
              ["--dry-run", "--data-dir", data_dir, "--output-dir", tmp_path / "out"],
              **{"/data/kmnist": data_dir})


def test_no_network_and_no_cached_files(capsys, empty_cache, tmp_path):
    check_row(capsys, "no network and no cached files",
              ["--dry-run", "--output-dir", tmp_path / "out"],
              **{"~/.keras/datasets": KERAS_HOME / "datasets"})


@pytest.fixture(params=["data_dir", "cache"])
def where(request, tmp_path):
    """The four files in a --data-dir folder or in the Keras cache: (paths, argv, fix)."""
    arrays = synthetic.make_arrays(train=600, test=200)
    if request.param == "data_dir":
        folder = tmp_path / "kmnist-data"
        paths = synthetic.write(synthetic.folder_paths(folder), arrays)
        argv = ["--data-dir", folder]
    else:
        paths = synthetic.write(synthetic.cache_paths(KERAS_HOME), arrays)
        argv = []
    yield paths, ["--dry-run", "--output-dir", tmp_path / "out", *argv], \
        readme_fixes()[request.param]
    if request.param == "cache":
        for path in paths.values():
            path.unlink(missing_ok=True)


@pytest.mark.parametrize("content", [b"<html>503 Service Unavailable</html>", "truncated"],
                         ids=["not a zip", "truncated"])
def test_truncated_file_or_not_a_zip(content, where, capsys):
    paths, argv, fix = where
    bad = paths["test_imgs"]
    bad.write_bytes(bad.read_bytes()[:500] if content == "truncated" else content)
    check_row(capsys, "truncated file, or not a zip", argv,
              **{"<file>": bad, "<fix>": fix})


def test_archive_without_arr_0(where, capsys):
    paths, argv, fix = where
    with open(paths["train_labels"], "wb") as f:
        np.savez(f, labels=np.zeros(600, np.uint8))
    check_row(capsys, "archive without the array `arr_0`", argv,
              **{"<file>": paths["train_labels"], "<fix>": fix})


def test_array_of_pickled_objects(where, capsys):
    paths, argv, fix = where
    with open(paths["train_imgs"], "wb") as f:
        np.savez(f, np.array([{"not": "images"}], dtype=object))
    check_row(capsys, "array of pickled Python objects", argv,
              **{"<file>": paths["train_imgs"], "<fix>": fix})


def test_images_of_the_wrong_shape(where, capsys):
    paths, argv, _ = where
    synthetic.save_npz(paths["train_imgs"], np.zeros((60000, 32, 32), np.uint8))
    check_row(capsys, "images of the wrong shape or dtype", argv,
              **{"<file>": paths["train_imgs"]})


def test_images_of_the_wrong_dtype(where, capsys):
    paths, argv, _ = where
    synthetic.save_npz(paths["train_imgs"], np.zeros((600, 28, 28), np.float64))
    messages, exit_code = readme_row("images of the wrong shape or dtype")
    # The cell's second message replaces the first one's description of the problem.
    template = messages[0].replace("images have shape (60000, 32, 32), expected (N, 28, 28)",
                                   messages[1])
    code, lines = error_output(capsys, argv)
    assert code == exit_code and len(lines) == 1, lines
    assert_whole_line(template, lines[0], **{"<file>": paths["train_imgs"]})


def test_labels_out_of_range(where, capsys):
    paths, argv, _ = where
    synthetic.save_npz(paths["train_labels"], np.full(600, 10, np.uint8))
    check_row(capsys, "labels out of range", argv, **{"<file>": paths["train_labels"]})


def test_images_and_labels_of_different_counts(where, capsys):
    paths, argv, _ = where
    synthetic.save_npz(paths["train_labels"], np.zeros(599, np.uint8))
    check_row(capsys, "images and labels of different counts", argv,
              **{"<labels file>": paths["train_labels"], "<images file>": paths["train_imgs"]})


def test_limit_1_leaves_nothing_to_validate(capsys, keras_cache, tmp_path):
    check_row(capsys, "`--limit 1`", ["--limit", "1", "--output-dir", tmp_path])


# The output folder and its backup: one epoch of 240 training images is enough.
ONE_EPOCH = ["--epochs", "1", "--limit", "300", "--verbose", "0"]


def snapshot(out):
    """Every file under `out` with its bytes: proof that a refused run touched nothing."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file()}


def test_a_folder_with_a_finished_run(capsys, keras_cache, tmp_path):
    out = tmp_path / "outputs"
    argv = [*ONE_EPOCH, "--no-plot", "--output-dir", out]
    assert cli([str(a) for a in argv]) == 0, capsys.readouterr().err
    capsys.readouterr()
    manifest = json.loads((out / "manifest.json").read_text())
    files = sorted(p.name for p in out.iterdir() if p.name != "manifest.json")
    assert files == ["history.csv", "history.json", "model.keras", "run.json"]
    before = snapshot(out)
    check_row(capsys, "an output folder with a finished run", argv,
              **{"outputs": out, "<files>": ", ".join(files),
                 "<time>": manifest["finished"]})
    assert snapshot(out) == before


@pytest.mark.parametrize("extra", [[], ["--overwrite"], ["--restart"]])
def test_a_folder_with_files_the_script_did_not_write(extra, capsys, keras_cache, tmp_path):
    out = tmp_path / "mine"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "notes.txt").write_text("my backup")
    (out / "history.csv").write_text("my,own\n1,2\n")
    before = snapshot(out)
    check_row(capsys, "an output folder with files the script did not write",
              [*ONE_EPOCH, "--output-dir", out, *extra],
              **{"<folder>": out, "<names>": "backup, history.csv"})
    assert snapshot(out) == before
    assert sorted(p.name for p in out.iterdir()) == ["backup", "history.csv"]


def test_a_folder_another_run_is_using(capsys, keras_cache, tmp_path):
    out = tmp_path / "outputs"
    out.mkdir()
    # flock belongs to an open file description: this process's own second take of
    # run.lock is refused just as another process's would be. Byte 0 is the lock's own
    # (Windows locks it); the holder's line follows.
    with folder.claimed(out):
        holder = (out / "run.lock").read_bytes()[1:].decode().strip()
        started = re.fullmatch(r"PID \d+ on .+, started (.+)", holder)
        assert started, holder
        check_row(capsys, "an output folder another run is using",
                  [*ONE_EPOCH, "--output-dir", out],
                  **{"outputs": out, "<pid>": os.getpid(), "<host>": socket.gethostname(),
                     "<time>": started.group(1)})
        assert (out / "run.lock").read_bytes()[1:].decode().strip() == holder  # the first's


HALF_WRITTEN = []


def fail_to_save_model(self, filepath, *args, **kwargs):
    """model.save on a full disk: half a file written, then an error that names no file
    (the OS names none), so the script must name it and remove the half."""
    Path(filepath).write_bytes(b"PK\x03\x04 half of a model")
    HALF_WRITTEN.append(Path(filepath))
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture(scope="module")
def stopped_while_saving(tmp_path_factory):
    """A run whose disk filled as it saved model.keras, after its one epoch was backed
    up: (folder, data folder, exit code, stderr)."""
    data_dir = tmp_path_factory.mktemp("readme-errors-data")
    synthetic.write(synthetic.folder_paths(data_dir), synthetic.make_arrays(train=600, test=200))
    out = tmp_path_factory.mktemp("readme-errors-full") / "outputs"
    stderr = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stderr(stderr), \
            contextlib.redirect_stdout(io.StringIO()):
        patch.setattr(keras.Model, "save", fail_to_save_model)
        code = cli([*ONE_EPOCH, "--no-plot", "--data-dir", str(data_dir),
                    "--output-dir", str(out)])
    return out, data_dir, code, stderr.getvalue()


def test_a_full_disk_while_writing(stopped_while_saving):
    out, _, code, stderr = stopped_while_saving
    messages, exit_code = readme_row("a full disk, a read-only folder")
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert code == exit_code and len(lines) == 1, stderr
    assert_whole_line(messages[0], lines[0], **{"<file>": out / "model.keras"})
    assert (out / "backup" / "training_metadata.json").exists()  # the completed epoch is kept
    assert not (out / "model.keras").exists() and not list(out.rglob("*partial*"))
    assert [path.name for path in HALF_WRITTEN] == ["model.partial.keras"]
    assert not HALF_WRITTEN[0].exists()  # the half-written file is gone


def damage_state_truncated(out):
    state = out / "backup" / "epoch-1.npz"
    state.write_bytes(state.read_bytes()[:1000])
    return "epoch-1.npz is truncated or changed since epoch 1"


def damage_state_deleted(out):
    (out / "backup" / "epoch-1.npz").unlink()
    return "epoch-1.npz: No such file or directory"


def damage_metadata_emptied(out):
    (out / "backup" / "training_metadata.json").write_text("")
    return ("training_metadata.json is unreadable: JSONDecodeError: Expecting value: "
            "line 1 column 1 (char 0)")


def damage_log_row_dropped(out):
    log = out / "history.csv"
    log.write_text(log.read_text().splitlines(True)[0])
    return "it holds 1 epoch(s) but history.csv logs epochs []"


@pytest.mark.parametrize("damage", [damage_state_truncated, damage_state_deleted,
                                    damage_metadata_emptied, damage_log_row_dropped])
def test_a_backup_that_disagrees(damage, stopped_while_saving, capsys, tmp_path):
    kept, data_dir, _, _ = stopped_while_saving
    out = tmp_path / "outputs"
    shutil.copytree(kept, out)
    problem = damage(out)
    before = snapshot(out)
    check_row(capsys, "a backup that disagrees",
              [*ONE_EPOCH, "--no-plot", "--data-dir", data_dir, "--output-dir", out],
              **{"outputs/backup": out / "backup", "<what disagrees>": problem})
    assert snapshot(out) == before  # the backup as it was, for the user to inspect


def test_sigterm_during_training(capsys, keras_cache, tmp_path, monkeypatch):
    out = tmp_path / "outputs"
    save_backup = backup.Backup.on_epoch_end

    def save_then_sigterm(self, epoch, logs=None):
        save_backup(self, epoch, logs)
        # Only while the script's handler is in place (during training, the one that
        # waits for the epoch's backup): otherwise SIGTERM ends pytest.
        assert signal.getsignal(signal.SIGTERM).__func__ is signals.SignalsWaitForTheBackup.handle
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(backup.Backup, "on_epoch_end", save_then_sigterm)
    handler = signal.getsignal(signal.SIGTERM)
    check_row(capsys, "SIGTERM during training",
              [*ONE_EPOCH, "--epochs", "2", "--output-dir", out],
              **{"after 3 ": "after 1 ", "outputs/": f"{out}/"})
    assert signal.getsignal(signal.SIGTERM) is handler  # cli.run put pytest's back
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 1
    assert (out / "training_history.png").stat().st_size > 0
    assert (out / "backup" / "training_metadata.json").exists()


# The --predict rows, each checked by its own test in test_predict.py.
CHECKED_IN_TEST_PREDICT = "`--predict` "


def rows_named_in_tests():
    """The first argument of every readme_row(...), check_row(capsys, ...) and
    tests/test_error_rows.py's check_raised(...) and own_row(capsys, ...) call in the
    tests' source: the rows some test compares with what the program prints."""
    calls = re.compile(r'(?:readme_row\(|check_raised\(|(?:check|own)_row\(capsys,\s*)"([^"]+)"')
    return {name for path in (ROOT / "tests").glob("test_*.py")
            for name in calls.findall(path.read_text())}


def test_every_row_of_the_table_is_checked():
    named = rows_named_in_tests()
    rows = list(readme_table())
    assert len(rows) >= 22  # a floor: a table cut short fails here
    unchecked = [row for row in rows if not any(row.startswith(name) for name in named)]
    assert unchecked == [], unchecked
