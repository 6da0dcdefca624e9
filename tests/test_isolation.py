"""No test can hang the suite or leak into the next: a time limit on every
test, no seed or op determinism left on after a test file, no synthetic data left in
the Keras cache after a failure, no Keras cache of the suite's left behind, and a
multi-worker test that survives losing a port."""
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from conftest import KERAS_HOME, ROOT, forget_seeds, kmnist_in_cache, run_on_free_ports


def test_every_test_runs_under_a_300_second_limit(request):
    # docs/development.md: every test, its fixtures included, has 300 seconds.
    assert request.config.pluginmanager.hasplugin("timeout")
    assert request.config.getini("timeout") == "300"


def test_a_seeded_run_leaves_no_seed_and_no_op_determinism_behind(request):
    from tensorflow.python.framework import config
    from machinery import startup
    assert "no_seed_outlives_its_test_file" in request.fixturenames  # autouse, per file
    startup.seed_everything(5)
    seeded = (random.random(), np.random.random())
    startup.seed_everything(5)
    assert config.is_op_determinism_enabled()
    forget_seeds()
    assert not config.is_op_determinism_enabled()
    # Seed 5 again would repeat `seeded`; after forgetting, Python and NumPy each draw afresh.
    assert random.random() != seeded[0] and np.random.random() != seeded[1]


def cached_kmnist():
    return sorted((KERAS_HOME / "datasets").glob("kmnist.npz_*"))


def test_synthetic_data_leaves_the_keras_cache_even_when_its_user_fails():
    with pytest.raises(RuntimeError, match="a fixture that fails"):
        with kmnist_in_cache(train=20, test=10):
            assert len(cached_kmnist()) == 4  # KMNIST's four files
            raise RuntimeError("a fixture that fails")
    assert cached_kmnist() == []


def test_the_suite_takes_its_keras_caches_away_when_it_ends(tmp_path):
    # Each process that imports conftest makes a private Keras cache in the temporary
    # folder, which TMPDIR chooses: the suite with two workers, as the README runs it,
    # makes three, and a test's child that imports a test module (test_sync_bn) one.
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    chosen = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert chosen.stdout.strip() == str(tmp_path)
    suite = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
         "tests/test_licence.py"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert suite.returncode == 0, suite.stdout + suite.stderr
    child = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path[:0] = {[str(ROOT), str(ROOT / 'tests')]!r}; "
                               "import test_licence"], capture_output=True, text=True, env=env,
        timeout=120)
    assert child.returncode == 0, child.stderr
    assert sorted(tmp_path.glob("kmnist-tests-keras-home-*")) == []


def fake_worker(exit_code, stderr):
    return subprocess.Popen(
        [sys.executable, "-c", f"import sys; sys.stderr.write({stderr!r}); sys.exit({exit_code})"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_workers_that_lose_a_port_before_binding_it_are_started_again_on_new_ones():
    attempts = []

    def launch(ports):
        attempts.append(ports)
        if len(attempts) == 1:  # gRPC's words when another program took the port first
            return [fake_worker(1, "Could not start gRPC server: Address already in use"),
                    fake_worker(0, "")]
        return [fake_worker(0, ""), fake_worker(0, "")]

    processes, outputs = run_on_free_ports(2, launch, timeout=60)
    assert len(attempts) == 2 and all(len(ports) == 2 for ports in attempts)
    assert [p.returncode for p in processes] == [0, 0] and outputs == [("", ""), ("", "")]


def test_a_worker_that_fails_for_another_reason_is_not_started_again():
    attempts = []

    def launch(ports):
        attempts.append(ports)
        return [fake_worker(1, "error: --distribute multiworker needs TF_CONFIG"),
                fake_worker(0, "")]

    processes, _ = run_on_free_ports(2, launch, timeout=60)
    assert len(attempts) == 1 and processes[0].returncode == 1
