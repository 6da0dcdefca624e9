"""--distribute: two logical CPU devices in one process, and two workers on 127.0.0.1."""
import json
import os
import socket
import subprocess
import sys
import time

from conftest import ROOT, error_lines, run_script

SMALL = ["--epochs", "1", "--no-plot", "--verbose", "2"]


def test_mirrored_trains_on_two_logical_cpu_devices(data_dir, tmp_path):
    out = tmp_path / "mirrored"
    done = run_script("--distribute", "mirrored", "--cpu-devices", "2", "--data-dir", data_dir,
                      "--output-dir", out, *SMALL)
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["distribute"] == "mirrored" and run["config"]["replicas"] == 2
    assert run["config"]["batch_size"] == 250  # the global batch
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [1, 1, 1, 1]
    assert 0 <= run["test_accuracy"] <= 1 and history["loss"][0] > 0
    assert (out / "model.keras").exists()


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_together_and_only_the_chief_writes(data_dir, tmp_path):
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    out = tmp_path / "multiworker"
    processes = []
    for index in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        processes.append(subprocess.Popen(
            [sys.executable, str(ROOT / "model_batchnorm.py"), "--distribute", "multiworker",
             "--data-dir", str(data_dir), "--output-dir", str(out), *SMALL],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
            # gRPC honours the tests' closed http_proxy: let the workers reach each other.
            env={**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1",
                 "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}))
    deadline = time.monotonic() + 300
    try:
        # A worker that fails leaves the other waiting for it: stop at the first failure.
        while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
            if any(p.poll() not in (None, 0) for p in processes):
                break
            time.sleep(0.2)
    finally:
        for p in processes:
            p.kill()
    outputs = [p.communicate() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [1, 1, 1, 1]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["distribute"] == "multiworker" and run["config"]["replicas"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "history.csv", "history.json", "model.keras", "run.json"]


def test_multiworker_without_tf_config_is_one_line_error(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    done = subprocess.run([sys.executable, str(ROOT / "model_batchnorm.py"), "--distribute",
                           "multiworker", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 1
    lines = error_lines(done.stderr)
    assert len(lines) == 1 and "TF_CONFIG" in lines[0]
