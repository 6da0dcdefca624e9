import atexit
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Keras reads KERAS_HOME once, when it is first imported: give the whole test
# session a private cache before any test module imports it.
KERAS_HOME = Path(tempfile.mkdtemp(prefix="kmnist-tests-keras-home-"))
os.environ["KERAS_HOME"] = str(KERAS_HOME)
# Gone as the process ends: each pytest process makes one, and so does a test's child
# process that imports a test module (tests/test_sync_bn.py).
atexit.register(shutil.rmtree, KERAS_HOME, ignore_errors=True)
# A download attempt goes to a closed local port and fails at once: no test
# can reach the network, even where there is one.
for variable in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY"):
    os.environ[variable] = "http://127.0.0.1:9"
os.environ.pop("no_proxy", None)
os.environ.pop("NO_PROXY", None)
os.environ["MPLBACKEND"] = "Agg"
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from testdata import synthetic  # noqa: E402


@contextlib.contextmanager
def kmnist_in_cache(train=600, test=200):
    """Small synthetic KMNIST in the Keras cache, under the names extra-keras-datasets
    uses; gone again afterwards, also when what ran inside failed."""
    try:
        yield synthetic.write(synthetic.cache_paths(KERAS_HOME),
                              synthetic.make_arrays(train=train, test=test))
    finally:
        for path in (KERAS_HOME / "datasets").glob("kmnist.npz_*"):
            path.unlink()


@pytest.fixture
def keras_cache():
    with kmnist_in_cache() as paths:
        yield paths


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


def settings_for(argv=(), arrays=None, out="outputs", strategy=None):
    """A run's Settings as model_batchnorm.py makes them from the flags `argv` and the
    arrays ((x_train, y_train), (x_test, y_test)), in `out`; the precision as the flags
    ask, whatever the hardware."""
    import model_batchnorm as mb
    from machinery import cli, settings, startup
    args = cli.parse_args([str(argument) for argument in argv], mb.flag_defaults)
    place = startup.Place(Path(out), strategy, args.precision)
    return settings.for_run(args, place, arrays, mb.preprocess)[0]


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


def forget_seeds():
    """Undo what a seeded in-process run (--seed, --compare) leaves on: TensorFlow's op
    determinism (no public switch turns it off: TensorFlow's own, version-checked) and
    every global seed, Keras' included (clear_session drops its global state)."""
    random.seed(None)
    import numpy as np
    np.random.seed(None)
    if "tensorflow" not in sys.modules:
        return
    import keras
    import tensorflow as tf
    from tensorflow.python.framework import config
    config.disable_op_determinism()
    tf.random.set_seed(None)
    keras.backend.clear_session(free_memory=False)


@pytest.fixture(scope="module", autouse=True)
def no_seed_outlives_its_test_file():
    """A test file's seeded runs leave no seed and no op determinism to the next file
    that the same pytest-xdist worker runs."""
    yield
    forget_seeds()


BIND_FAILURES = ("Address already in use", "Could not start gRPC server",
                 "Failed to add port")


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def wait_for_all(processes, timeout):
    """Wait until every process ends, or one fails (it leaves the others waiting), or
    the time is up; then end them all. Their (stdout, stderr)."""
    deadline = time.monotonic() + timeout
    try:
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            p.kill()
    return [p.communicate() for p in processes]


def run_on_free_ports(count, launch, timeout=300, attempts=3):
    """launch(ports) starts processes that bind `count` ports found free; another program
    may take a port between the finding and the binding: then try again on new ports.
    The processes and their (stdout, stderr)."""
    for attempt in range(attempts):
        processes = launch(free_ports(count))
        outputs = wait_for_all(processes, timeout)
        lost_a_port = any(text in err for _, err in outputs for text in BIND_FAILURES)
        if not lost_a_port or attempt == attempts - 1:
            return processes, outputs


def cli(argv=None):
    """The training script's command line, in-process: its exit code."""
    import machinery.cli
    import model_batchnorm
    return machinery.cli.run(model_batchnorm.main, argv)


def interrupted(argv, where):
    """cli(argv) with Ctrl-C sent where tests/stop_at.py's notation `where` says (in this
    process, its handler put back afterwards); the exit code."""
    import io
    import signal
    import stop_at
    _, undo = stop_at.install(signal.SIGINT, where)
    # Python turns SIGINT into KeyboardInterrupt only where it is not ignored (xdist).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            return cli(argv)
    finally:
        signal.signal(signal.SIGINT, previous)
        undo()


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


# Whole training runs that each took 8 s or more of the main suite, or share a module
# fixture that does (pytest --durations=70, the 2-core AMD EPYC, 2026-12-03; the two of
# test_comparisons.py: --durations=25, the 2-core Intel Xeon, 2026-12-08). .ci/run runs
# the main suite on three Pythons and the slow tests once, so these run in its slow
# phase (`pytest -m slow`); the mutation check runs its chosen tests whatever their marks.
WHOLE_TRAINING_RUNS = {
    "test_batchnorm_stats.py": {
        "test_default_run_on_real_digits_names_the_lag_after_the_test_line",
        "test_each_remedy_on_real_digits_reaches_95_percent_without_a_note",
        "test_tracked_history_holds_batch_statistics_per_epoch"},
    "test_comparisons.py": {"test_each_question_answers_from_one_command_on_kmnist_files",
                            "test_batch_size_steps_follow_the_batch_size"},
    "test_cli.py": {"test_script_prints_the_test_line_and_writes_the_files",
                    "test_verbose_is_1_on_a_terminal"},
    "test_datasets.py": {"test_mnist_runs_end_to_end_through_keras_cache",
                         "test_fashion_mnist_runs_end_to_end_through_keras_own_loader",
                         "test_tensorboard_logs_hold_the_epoch_scalars_per_variant"},
    "test_distribute.py": {"test_mirrored_trains_on_three_logical_cpu_devices_with_the_global_batch"},
    "test_fast.py": {"test_fast_run_writes_the_same_files_and_learns"},
    "test_faults.py": {"test_a_second_run_on_the_same_folder_is_refused_and_no_lock_outlives_a_kill",
                       "test_a_disk_that_fills_while_the_results_are_saved_loses_no_epoch",
                       "test_a_disk_that_fills_at_the_first_backup_is_one_line"},
    "test_keras_internals.py": {
        "test_a_smoke_run_on_a_keras_without_the_patched_internal_completes_with_one_note",
        "test_without_autotuning_the_lesson_computes_exactly_the_same_numbers"},
    "test_layer_inputs.py": {"test_another_layers_inputs_end_to_end_with_its_picture"},
    "test_learning_rates.py": {
        "test_every_pair_trains_in_its_own_folder_at_its_rate_from_the_same_seed",
        "test_predict_on_the_top_folder_names_the_pairs_sub_folders",
        "test_a_diverging_run_stops_with_one_line_and_the_others_go_on",
        "test_the_table_has_a_column_per_pair_both_clocks_and_says_which_diverged",
        "test_the_plain_variants_percentiles_match_a_recomputation_too",
        "test_an_interrupted_several_rate_compare_resumes_and_shows_no_seconds_it_did_not_time",
        "test_without_the_study_flags_a_run_prints_only_the_lessons_lines"},
    "test_platforms.py": None,  # every test: the product as Windows would import it
    "test_precision.py": {"test_bfloat16_training_computes_in_bfloat16_on_both_paths"},
    "test_predict.py": {
        "test_predict_agrees_with_the_models_evaluation_on_held_back_digits_both_ways",
        "test_predict_prints_the_models_probabilities_most_probable_first",
        "test_names_come_from_the_runs_run_json"},
    "test_promises.py": {"test_overwrite_removes_every_file_of_the_old_finished_run"},
    "test_reproducibility.py": {"test_same_seed_in_separate_processes_gives_identical_histories"},
    "test_resume.py": {"test_killed_run_resumes_where_it_stopped"},
    "test_signal_points.py": {"test_a_signal_before_or_after_training_is_its_exit_code_and_one_line"},
    "test_signals.py": {"test_a_signal_at_each_point_of_an_epoch_stops_where_log_and_backup_agree"},
    "test_sync_bn.py": {"test_sync_bn_moving_statistics_are_those_of_the_whole_global_batch"},
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by mark
def pytest_collection_modifyitems(items):
    for item in items:
        names = WHOLE_TRAINING_RUNS.get(item.path.name, ())
        if names is None or item.originalname in names:
            item.add_marker(pytest.mark.slow)
