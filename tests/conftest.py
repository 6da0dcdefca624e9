import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keras reads KERAS_HOME once, when it is first imported: give the whole test
# session a private cache before any test module imports it.
KERAS_HOME = Path(tempfile.mkdtemp(prefix="kmnist-tests-keras-home-"))
os.environ["KERAS_HOME"] = str(KERAS_HOME)
# A download attempt goes to a closed local port and fails at once: no test
# can reach the network, even where there is one.
for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
    os.environ[variable] = "http://127.0.0.1:9"
os.environ.pop("no_proxy", None)
os.environ.pop("NO_PROXY", None)
os.environ["MPLBACKEND"] = "Agg"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from testdata import synthetic  # noqa: E402


@pytest.fixture
def keras_cache():
    """Small synthetic KMNIST in the Keras cache, under the names extra-keras-datasets uses."""
    arrays = synthetic.make_arrays(train=600, test=200)
    paths = synthetic.write(synthetic.cache_paths(KERAS_HOME), arrays)
    yield paths
    for path in (KERAS_HOME / "datasets").glob("kmnist.npz_*"):
        path.unlink()


@pytest.fixture
def empty_cache():
    for path in (KERAS_HOME / "datasets").glob("kmnist.npz_*"):
        path.unlink()
    return synthetic.cache_paths(KERAS_HOME)


@pytest.fixture
def data_dir(tmp_path):
    """Small synthetic KMNIST under the official file names, for --data-dir."""
    folder = tmp_path / "kmnist-data"
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(train=600, test=200))
    return folder


@pytest.fixture(scope="module")
def module_data_dir(tmp_path_factory):
    """Small synthetic KMNIST (600 training, 100 test images) for --data-dir, shared by a
    test module's runs."""
    folder = tmp_path_factory.mktemp("module-data")
    synthetic.write(synthetic.folder_paths(folder), synthetic.make_arrays(600, 100))
    return folder


def run_script(*args, env=None, timeout=240, script="model_batchnorm.py"):
    """Run a script of the project as a user would; returns the CompletedProcess."""
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )


def as_from_a_terminal():
    """For Popen's preexec_fn: Ctrl-C (SIGINT) back to its default in the child. A
    pytest-xdist worker ignores SIGINT, and a child that inherits that never sees it
    (Python installs its KeyboardInterrupt handler only where SIGINT is not ignored)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_for_first_backup(process, out, timeout=180):
    """Return once the backup in `out` holds a completed epoch; fail if the run ends first."""
    import time
    metadata = out / "backup" / "training_metadata.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        if metadata.exists():
            return
        time.sleep(0.02)
    process.kill()
    raise AssertionError("no epoch completed in time")


def stopped_after_first_epoch(process, out, signal_number):
    """Send `signal_number` to a run once it has backed up an epoch; its exit code,
    stdout and stderr."""
    wait_for_first_backup(process, out)
    process.send_signal(signal_number)
    stdout, stderr = process.communicate(timeout=120)
    return process.returncode, stdout, stderr


def cli(argv=None):
    """The training script's command line, in-process: its exit code."""
    import machinery.cli
    import model_batchnorm
    return machinery.cli.run(model_batchnorm.main, argv)


def error_lines(stderr):
    """The lines of a failed run that report the error (and prove there is no traceback)."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def pytest_configure(config):
    # The product must run without a warning: any UserWarning (Keras' own kind)
    # fails the test that caused it.
    config.addinivalue_line("filterwarnings", "error::UserWarning")
    # TensorFlow's variables lack NumPy 2's `copy` keyword in __array__, and
    # Keras' own convert_to_numpy (used by model.save) trips over it. Python
    # hides this DeprecationWarning from users (it is raised outside __main__);
    # test_cli checks that a real run's stderr shows no warning at all.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning")
