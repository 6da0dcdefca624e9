"""The product on Windows and macOS: no POSIX-only module on any command's path.

Windows has no fcntl (nor pwd, resource, termios, ...). Every command runs here in a
Python that imports as Windows' would (tests/as_on_windows/sitecustomize.py on
PYTHONPATH): --help, --dry-run, a smoke run with its pictures, a second run refused by
the output folder's lock, --predict. Without fcntl, filelock's soft lock stands in for
Windows' own (LockFileEx, which this machine cannot run): it refuses a second run and is
gone once its holder ends.
"""
import ast
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT, run_script
from testdata import synthetic

AS_ON_WINDOWS = ROOT / "tests" / "as_on_windows"
# Python's docs list these as Unix-only; a product file that imports one fails on Windows.
POSIX_ONLY = {"fcntl", "posix", "pwd", "grp", "termios", "tty", "pty", "resource", "syslog",
              "crypt", "nis", "spwd"}
PRODUCT = [ROOT / "model_batchnorm.py", ROOT / "plot_history.py",
           *sorted((ROOT / "machinery").glob("*.py")), *sorted((ROOT / "tools").glob("*.py"))]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def windows_env():
    paths = [str(AS_ON_WINDOWS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths)}


def as_on_windows(*args, script="model_batchnorm.py"):
    done = run_script(*args, env=windows_env(), script=script)
    assert "Traceback" not in done.stderr, done.stderr
    return done


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("platforms-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=600, test=100))
    return folder


@pytest.fixture(scope="module")
def smoke_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("platforms") / "smoke"
    done = as_on_windows("--epochs", "2", "--limit", "600", "--batch-size", "100",
                         "--data-dir", data, "--output-dir", out)
    return out, done


def test_no_product_file_imports_a_posix_only_module():
    found = []
    for path in PRODUCT:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module
                     else [])
            found += [f"{path.name}: {name}" for name in names
                      if name.partition(".")[0] in POSIX_ONLY]
    assert found == []


def test_the_simulation_refuses_fcntl_as_windows_does():
    done = subprocess.run(
        [sys.executable, "-c", "import fcntl"], capture_output=True, text=True,
        env={**os.environ, **windows_env()}, cwd=ROOT, timeout=60)
    assert done.returncode == 1
    assert "ModuleNotFoundError: No module named 'fcntl'" in done.stderr


def test_help_and_dry_run_work_without_fcntl(data, tmp_path):
    helped = as_on_windows("--help")
    assert helped.returncode == 0 and helped.stdout.startswith("usage: model_batchnorm.py")
    checked = as_on_windows("--dry-run", "--data-dir", data, "--output-dir", tmp_path / "out")
    assert checked.returncode == 0, checked.stderr
    assert "nothing was trained" in checked.stdout


def test_a_smoke_run_and_its_pictures_work_without_fcntl(smoke_run, tmp_path):
    out, done = smoke_run
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stdout.splitlines() if line.startswith("Test loss: ")]
    for picture in ("training_history.png", "predictions.png", "confusion_matrix.png"):
        assert (out / picture).read_bytes()[:8] == PNG_SIGNATURE, picture
    assert not (out / "run.lock").exists()  # released as the run ended
    drawn = as_on_windows(out / "history.json", "-o", tmp_path / "curves.png",
                          script="plot_history.py")
    assert drawn.returncode == 0, drawn.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG_SIGNATURE


HOLD_THE_FOLDER = """
import sys
from pathlib import Path
from machinery import folder
with folder.claimed(Path(sys.argv[1])):
    print("holding", flush=True)
    sys.stdin.readline()
"""


def test_a_second_run_is_refused_by_the_lock_without_fcntl(data, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_THE_FOLDER, str(out)], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env={**os.environ, **windows_env()})
    try:
        assert holder.stdout.readline() == "holding\n", holder.stderr.read()
        refused = as_on_windows("--epochs", "1", "--data-dir", data, "--output-dir", out)
    finally:
        _, stderr = holder.communicate("\n", timeout=60)
    assert holder.returncode == 0, stderr
    assert refused.returncode == 1
    (line,) = [line for line in refused.stderr.splitlines() if line.strip()]
    assert line.startswith(f"error: another run is using {out} (PID {holder.pid} on ")
    assert line.endswith("wait for it to end, or choose another --output-dir")
    assert sorted(out.iterdir()) == []  # the holder wrote nothing and released its lock


def test_predict_works_without_fcntl(smoke_run, tmp_path):
    out, _ = smoke_run
    image = tmp_path / "glyph.png"
    Image.fromarray(synthetic.make_arrays(train=10, test=1)["test_imgs"][0].astype(np.uint8)) \
        .save(image)
    done = as_on_windows("--predict", out, image)
    assert done.returncode == 0, done.stderr
    assert f"{image}: " in done.stdout


def replace_refused(times, monkeypatch):
    """os.replace fails `times` times as Windows' does while another process holds the
    target open, then works; the calls made."""
    calls, real = [], os.replace

    def replace(source, target):
        calls.append(target)
        if len(calls) <= times:
            raise PermissionError(13, "The process cannot access the file", str(target))
        real(source, target)

    monkeypatch.setattr(os, "replace", replace)
    return calls


def test_on_windows_a_file_held_open_elsewhere_is_replaced_once_it_is_closed(
        monkeypatch, tmp_path):
    from machinery import files
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(files.time, "sleep", lambda seconds: None)
    calls = replace_refused(3, monkeypatch)
    files.write_json(tmp_path / "run.json", {"epochs": 2})
    assert len(calls) == 4
    assert (tmp_path / "run.json").read_text() == '{\n  "epochs": 2\n}\n'
    assert sorted(path.name for path in tmp_path.iterdir()) == ["run.json"]


def test_elsewhere_a_refused_replace_is_reported_at_once(monkeypatch, tmp_path):
    from machinery import files
    from machinery.errors import ScriptError
    monkeypatch.setattr(sys, "platform", "linux")
    calls = replace_refused(1, monkeypatch)
    with pytest.raises(ScriptError):  # a missing permission: one line (errors.environmental)
        files.write_json(tmp_path / "run.json", {"epochs": 2})
    assert len(calls) == 1
    assert list(tmp_path.iterdir()) == []


def test_the_lock_and_its_file_are_gone_when_a_run_ends_however_it_ends(tmp_path):
    from machinery import folder
    out = tmp_path / "out"
    out.mkdir()
    with folder.locked(out):
        assert (out / "run.lock").exists()
    assert list(out.iterdir()) == []
    with pytest.raises(KeyboardInterrupt), folder.locked(out):
        raise KeyboardInterrupt  # Ctrl-C
    assert list(out.iterdir()) == []
    with folder.locked(out):  # free again
        pass
