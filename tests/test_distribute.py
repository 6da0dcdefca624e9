"""--distribute: logical CPU devices in one process, two workers on 127.0.0.1, the chief
rule and the non-chief's scratch folder, and what a bad TF_CONFIG gets."""
import argparse
import contextlib
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, cli, error_lines, run_on_free_ports, run_script
from machinery import distribute, startup
from machinery.quiet import tf

SMALL = ["--epochs", "1", "--no-plot", "--verbose", "2"]


def test_cpu_devices_defaults_to_2():
    from machinery import cli as flags
    args = flags.parse_args(["--distribute", "mirrored"], dict(
        epochs=25, batch_size=250, validation_split=0.2, verbosity=1))
    assert args.cpu_devices == 2  # the README's default


def test_mirrored_trains_on_three_logical_cpu_devices_with_the_global_batch(data_dir, tmp_path):
    # One process, its CPU split in 3 (the two-worker test below has 2 replicas). 100
    # images a step on 3 devices are shares of unequal size (34, 34, 32): they must work.
    out = tmp_path / "mirrored"
    done = run_script("--distribute", "mirrored", "--cpu-devices", "3", "--batch-size", "100",
                      "--data-dir", data_dir, "--output-dir", out, *SMALL)
    assert done.returncode == 0, done.stderr
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["distribute"] == "mirrored" and run["config"]["replicas"] == 3
    assert run["config"]["batch_size"] == 100  # the global batch
    # 480 training images (600 less the last 20%) in global batches of 100 shared by the
    # replicas: 5 steps. Had every replica taken 100 (a global batch of 300), an epoch
    # would be 2 steps.
    epoch_lines = [line for line in done.stdout.splitlines() if re.match(r"\d+/\d+ - ", line)]
    assert len(epoch_lines) == 1 and epoch_lines[0].startswith("5/5 - "), done.stdout
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [1, 1, 1, 1]
    assert 0 <= run["test_accuracy"] <= 1 and history["loss"][0] > 0
    assert (out / "model.keras").exists()


def worker(index, workers, data_dir, out, scratch_parent):
    config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "model_batchnorm.py"), "--distribute", "multiworker",
         "--data-dir", str(data_dir), "--output-dir", str(out), *SMALL],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        # gRPC honours the tests' closed http_proxy: let the workers reach each other.
        env={**os.environ, "TF_CONFIG": json.dumps(config), "PYTHONUNBUFFERED": "1",
             "TMPDIR": str(scratch_parent),
             "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"})


def test_two_workers_train_together_and_only_the_chief_writes(data_dir, tmp_path):
    out = tmp_path / "multiworker"
    scratch_parent = tmp_path / "tmp"  # where tempfile puts the non-chief's scratch folder
    scratch_parent.mkdir()
    # A port found free may be taken before a worker binds it: run_on_free_ports retries.
    processes, outputs = run_on_free_ports(2, lambda ports: [
        worker(index, [f"127.0.0.1:{port}" for port in ports], data_dir, out, scratch_parent)
        for index in range(2)])
    assert [p.returncode for p in processes] == [0, 0], [err[-3000:] for _, err in outputs]
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [1, 1, 1, 1]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["distribute"] == "multiworker" and run["config"]["replicas"] == 2
    assert sorted(p.name for p in out.iterdir()) == [
        "history.csv", "history.json", "manifest.json", "model.keras", "run.json"]
    assert [p.name for p in scratch_parent.iterdir() if p.name.startswith("kmnist-worker-")] == []




def tf_config_error(capsys, tmp_path):
    code = cli(["--distribute", "multiworker", "--output-dir", str(tmp_path / "out")])
    lines = [line for line in capsys.readouterr().err.splitlines() if line]
    assert code == 1
    assert len(lines) == 1 and error_lines("\n".join(lines)) == lines, lines
    # It sends the user to a docs page that exists and explains TF_CONFIG.
    cited = re.search(r"see (docs/[\w-]+\.md)$", lines[0])
    assert cited and "TF_CONFIG" in (ROOT / cited.group(1)).read_text(), lines[0]
    return lines[0]


def test_multiworker_without_tf_config_is_one_line_error(capsys, monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    line = tf_config_error(capsys, tmp_path)
    assert line.startswith("error: --distribute multiworker needs the cluster in the TF_CONFIG "
                           "environment variable: ")


@pytest.mark.parametrize("tf_config", ['{"cluster": {"worker": ["127.0.0.1:1"]}',
                                       "cluster=worker0", ""])
def test_malformed_tf_config_is_one_line_error(tf_config, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", tf_config)
    try:
        json.loads(tf_config)
    except ValueError as err:
        why = str(err)
    line = tf_config_error(capsys, tmp_path)
    assert line.startswith(f"error: TF_CONFIG is not valid JSON ({why}): see docs/distributed.md")


class FakeMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """A MultiWorkerMirroredStrategy as is_chief sees it, without starting a cluster."""

    def __init__(self, cluster, task_type, task_id):
        self.resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

    @property
    def cluster_resolver(self):
        return self.resolver


WORKERS = {"worker": ["10.0.0.1:1", "10.0.0.2:1"]}
WITH_CHIEF = {"chief": ["10.0.0.9:1"], **WORKERS}


@pytest.mark.parametrize("cluster, task_type, task_id, chief", [
    (WORKERS, "worker", 0, True),  # no chief named: worker 0 is the chief
    (WORKERS, "worker", 1, False),
    (WITH_CHIEF, "chief", 0, True),
    (WITH_CHIEF, "worker", 0, False),
    (WITH_CHIEF, "worker", 1, False),
])
def test_the_chief_is_the_chief_task_else_worker_0(cluster, task_type, task_id, chief):
    assert distribute.is_chief(FakeMultiWorker(cluster, task_type, task_id)) is chief


def startup_args(out):
    return argparse.Namespace(output_dir=out, distribute="multiworker", cpu_devices=2, seed=None,
                              dry_run=False, overwrite=False)


@pytest.mark.parametrize("fails", [False, True], ids=["finishes", "fails"])
def test_a_non_chief_worker_writes_to_a_scratch_folder_that_is_removed(
        fails, monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda kind, devices: FakeMultiWorker(WORKERS, "worker", 1))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with startup.prepared(startup_args(out)) as args:
            scratch = args.output_dir
            assert scratch != out and scratch.is_dir() and not scratch.is_relative_to(out)
            (scratch / "model.keras").write_text("the worker's copy")
            if fails:
                raise RuntimeError("training failed")
    assert not scratch.exists()
    assert list(out.iterdir()) == []  # the chief's folder: nothing from this worker


def test_the_chief_writes_to_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda kind, devices: FakeMultiWorker(WORKERS, "worker", 0))
    out = tmp_path / "out"
    with startup.prepared(startup_args(out)) as args:
        assert args.output_dir == out
