"""--distribute: logical CPU devices in one process, the chief rule, the other workers'
own folders, and what a bad TF_CONFIG gets. Two workers on 127.0.0.1 train in
tests/test_workers.py (TF_CONFIG) and tests/test_slurm.py (Slurm)."""
import json
import re
import socket
import subprocess
import sys

import pytest

from conftest import ROOT, cli, error_lines, run_on_free_ports, run_script
from machinery import distribute, startup
from machinery.quiet import tf
from test_readme_errors import assert_whole_line, readme_row

SMALL = ["--epochs", "1", "--no-plot", "--verbose", "2"]


def test_cpu_devices_defaults_to_2():
    assert startup_args("outputs").cpu_devices == 2  # the README's default


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


def free_ports(count, consecutive=False):
    """`count` ports free on 127.0.0.1 (`consecutive` ones for Slurm's port+k), found by
    binding them; the workers bind them again moments later."""
    while True:
        sockets = [socket.socket() for _ in range(count)]
        try:
            sockets[0].bind(("127.0.0.1", 0))
            first = sockets[0].getsockname()[1]
            for offset, s in enumerate(sockets[1:], start=1):
                s.bind(("127.0.0.1", first + offset if consecutive else 0))
            return [s.getsockname()[1] for s in sockets]
        except OSError:  # the next port is taken: try another first port
            continue
        finally:
            for s in sockets:
                s.close()


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
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    line = tf_config_error(capsys, tmp_path)
    assert line.startswith("error: --distribute multiworker needs the cluster in the TF_CONFIG "
                           "environment variable, or a Slurm job: ")


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


WRONG_SHAPES = {
    "a list": ("[1, 2]", "a JSON list, not an object"),
    "no cluster": ('{"task": {"type": "worker", "index": 0}}',
                   '"cluster" must map each task type to a list of "host:port" addresses'),
    "an address, not a list": ('{"cluster": {"worker": "127.0.0.1:1"}, '
                               '"task": {"type": "worker", "index": 0}}',
                               '"cluster" must map each task type to a list of "host:port" '
                               'addresses'),
    "a task type the cluster lacks": (
        '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief", "index": 0}}',
        '"task" must name a "type" of the cluster (worker)'),
    "an index past the end": (
        '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
        '"task": {"type": "worker", "index": 2}}',
        '"task" "index" must be a whole number from 0 to 1, got 2'),
}


@pytest.mark.parametrize("shape", WRONG_SHAPES)
def test_tf_config_of_the_wrong_shape_is_one_line_naming_the_problem_and_the_form(
        shape, capsys, monkeypatch, tmp_path):
    tf_config, problem = WRONG_SHAPES[shape]
    monkeypatch.setenv("TF_CONFIG", tf_config)
    line = tf_config_error(capsys, tmp_path)
    (template,), code = readme_row("a `TF_CONFIG` that is JSON but not a cluster")
    assert code == 1
    assert_whole_line(template, line, **{"(...)": f"({problem})"})
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


class FakeMultiWorker(tf.distribute.MultiWorkerMirroredStrategy):
    """A MultiWorkerMirroredStrategy as is_chief sees it, without starting a cluster."""

    def __init__(self, cluster, task_type, task_id):
        self.resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
            tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)

    @property
    def cluster_resolver(self):
        return self.resolver

    @property
    def num_replicas_in_sync(self):  # one CPU replica per worker
        return sum(len(tasks) for tasks in self.resolver.cluster_spec().as_dict().values())


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


def startup_args(out, *flags):
    from machinery import cli
    import model_batchnorm as mb
    return cli.parse_args(["--distribute", "multiworker", "--output-dir", str(out), *flags],
                          mb.flag_defaults)


def test_a_non_chief_worker_removes_its_own_folder_when_it_finishes(monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda *flags: FakeMultiWorker(WORKERS, "worker", 1))
    out = tmp_path / "out"
    with startup.prepared(startup_args(out)) as place:
        assert place.output_dir == out / "workers" / "worker-1" and place.output_dir.is_dir()
        (place.output_dir / "model.keras").write_text("the worker's copy")
    assert not out.exists()  # nothing left from this worker: not even the folder it made


def test_a_failed_non_chief_worker_keeps_its_folder_for_the_rerun(monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda *flags: FakeMultiWorker(WORKERS, "worker", 1))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with startup.prepared(startup_args(out)) as place:
            (place.output_dir / "backup").mkdir()
            raise RuntimeError("training failed")
    assert (out / "workers" / "worker-1" / "backup").is_dir()


def test_the_chief_writes_to_the_output_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda *flags: FakeMultiWorker(WORKERS, "worker", 0))
    out = tmp_path / "out"
    with startup.prepared(startup_args(out)) as place:
        assert place.output_dir == out


def test_overwrite_on_a_non_chief_worker_replaces_only_its_own_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(distribute, "make_strategy",
                        lambda *flags: FakeMultiWorker(WORKERS, "worker", 1))
    out = tmp_path / "out"
    (out / "workers" / "worker-1" / "backup").mkdir(parents=True)
    (out / "workers" / "worker-2" / "backup").mkdir(parents=True)  # another worker's
    with startup.prepared(startup_args(out, "--overwrite")) as place:
        assert list(place.output_dir.iterdir()) == []  # its old backup is gone
    assert [p.name for p in (out / "workers").iterdir()] == ["worker-2"]
