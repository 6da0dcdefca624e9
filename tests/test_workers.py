"""--distribute multiworker with two worker processes on 127.0.0.1 (docs/distributed.md):
a lost worker (killed, or SIGTERM) stops the other in one line within the bound, and
the same commands resume both from the same epoch."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT, error_lines
from machinery import distribute
from test_distribute import free_ports
from test_readme_errors import readme_row

SECONDS = 240  # every wait on the workers ends by then
COMMAND = ["--limit", "200", "--batch-size", "50", "--seed", "1", "--no-plot",
           "--verbose", "2", "--distribute", "multiworker"]


def environment(**extra):
    # gRPC honours the tests' closed http_proxy: let the workers reach each other.
    return {**os.environ, "PYTHONUNBUFFERED": "1", "no_proxy": "127.0.0.1,localhost",
            "NO_PROXY": "127.0.0.1,localhost", **extra}


def start_workers(data_dir, out, epochs, ports, *flags):
    """The same command on two workers, as a user starts them on two machines."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return [subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), *COMMAND, *flags,
         "--epochs", str(epochs), "--data-dir", str(data_dir), "--output-dir", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        env=environment(TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}})))
        for index in range(2)]


def finish(processes, timeout=SECONDS):
    """Wait for every worker (killing any left at the timeout): [(code, stdout, stderr)]."""
    deadline = time.monotonic() + timeout
    results = []
    for p in processes:
        try:
            stdout, stderr = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        results.append((p.returncode, stdout, stderr))
    return results


def backups(out):
    return [out / "backup", out / "workers" / "worker-1" / "backup"]


def backed_up_epoch(folder):
    try:
        return json.loads((folder / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def wait_until(condition, processes, timeout=SECONDS):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
            for p in processes:
                p.kill()
            raise AssertionError(finish(processes))
        time.sleep(0.05)


def state(folder, epoch):
    """The variables a backup holds for `epoch` (its latest, or its previous state)."""
    with np.load(folder / f"epoch-{epoch}.npz") as arrays:
        return [arrays[name] for name in sorted(arrays.files, key=lambda n: int(n[4:]))]


def exit_times(processes, timeout=SECONDS):
    """When each process ended (time.monotonic()), or None if it was still running at the
    timeout; their output stays in the pipes for finish()."""
    deadline, ended = time.monotonic() + timeout, [None] * len(processes)
    while None in ended and time.monotonic() < deadline:
        for index, p in enumerate(processes):
            if ended[index] is None and p.poll() is not None:
                ended[index] = time.monotonic()
        time.sleep(0.05)
    assert None not in ended, finish(processes, timeout=1)
    return ended


# Two worker processes each: .ci/run runs them in their own phase (pytest.ini).
pytestmark = pytest.mark.slow


def logged_epochs(out):
    return [int(row.split(",")[0]) for row in (out / "history.csv").read_text().splitlines()[1:]]


@pytest.fixture
def ports():
    return free_ports(2)


def lost_worker_line(stderr):
    (line,), code = readme_row("a worker of a `--distribute multiworker` run lost")
    assert code == 1
    assert error_lines(stderr) == [line], stderr[-3000:]


def test_a_killed_worker_stops_the_other_in_one_line_and_both_resume_from_the_same_epoch(
        data_dir, tmp_path, ports):
    # --sync-bn: every variable is the same on both workers, the moving statistics too
    # (unsynchronised, each worker's follow its own share of the batches).
    out = tmp_path / "run"
    first = start_workers(data_dir, out, 3, ports, "--sync-bn")
    wait_until(lambda: all(backed_up_epoch(b) >= 1 for b in backups(out)), first)
    first[1].kill()  # mid-epoch: the next one has begun
    killed = time.monotonic()
    (code, _, stderr), _ = finish(first)
    assert time.monotonic() - killed < distribute.LOST_WORKER_BOUND_S
    assert code == 1
    lost_worker_line(stderr)
    held = [backed_up_epoch(b) for b in backups(out)]
    assert min(held) >= 1 and max(held) - min(held) <= 1, held
    chief, worker = (state(b, min(held)) for b in backups(out))
    assert len(chief) == len(worker) and all(
        np.array_equal(a, b) for a, b in zip(chief, worker))  # the same variables to resume
    second = finish(start_workers(data_dir, out, 3, ports, "--sync-bn"))
    assert [code for code, _, _ in second] == [0, 0], [err[-2000:] for _, _, err in second]
    resumed = [[line for line in stdout.splitlines() if line.startswith("Resuming")]
               for _, stdout, _ in second]
    # Both from the same epoch, the latest every backup held.
    assert resumed == [[f"Resuming from the backup in {folder}: {min(held)} epoch(s) already "
                        "done (add --restart to start over)."] for folder in backups(out)]
    assert logged_epochs(out) == [0, 1, 2]
    assert all(len(v) == 3 for v in json.loads((out / "history.json").read_text()).values())
    assert not (out / "workers").exists() and not (out / "backup").exists()


def test_sigterm_to_one_worker_stops_it_with_143_and_the_other_in_one_line(
        data_dir, tmp_path, ports):
    out = tmp_path / "run"
    # Epochs of 200 images last a fraction of a second: with 3, the signal could land
    # after the last one, and worker 0 finish alone. 30 keep it inside training.
    processes = start_workers(data_dir, out, 30, ports)
    wait_until(lambda: all(backed_up_epoch(b) >= 1 for b in backups(out)), processes)
    processes[1].send_signal(signal.SIGTERM)  # a preemption
    ended = exit_times(processes)
    (code, _, stderr), (terminated, _, own_stderr) = finish(processes)
    assert ended[0] - ended[1] < distribute.LOST_WORKER_BOUND_S  # from worker 1's end
    assert code == 1
    lost_worker_line(stderr)
    assert terminated == 143
    assert own_stderr.splitlines()[-1].startswith("Terminated (SIGTERM) after "), own_stderr
    assert all(backed_up_epoch(b) >= 1 for b in backups(out))  # the same commands resume


def test_sigterm_to_a_worker_before_training_stops_it_with_143_and_the_other_in_one_line(
        data_dir, tmp_path, ports):
    # TensorFlow's preemption notifier takes SIGTERM over when the strategy is made (it
    # only logs it); outside training, make_strategy's hand-back alone lets it stop a worker.
    out = tmp_path / "run"
    processes = start_workers(data_dir, out, 3, ports)
    # Worker 1 makes its own folder once its strategy exists. With worker 0 paused (for
    # less than the heartbeat timeout), worker 1 cannot pass the workers' agreement on
    # the epoch to start from: the signal lands before training.
    wait_until(lambda: (out / "workers" / "worker-1").is_dir(), processes)
    processes[0].send_signal(signal.SIGSTOP)
    processes[1].send_signal(signal.SIGTERM)
    time.sleep(1)
    processes[0].send_signal(signal.SIGCONT)
    ended = exit_times(processes)
    (code, _, stderr), (terminated, _, own_stderr) = finish(processes)
    (line,), expected_code = readme_row("SIGTERM before training or after it")
    assert (terminated, expected_code) == (143, 143), own_stderr[-3000:]
    assert own_stderr.splitlines()[-1] == line, own_stderr[-3000:]
    assert ended[0] - ended[1] < distribute.LOST_WORKER_BOUND_S  # from worker 1's end
    assert code == 1
    lost_worker_line(stderr)
