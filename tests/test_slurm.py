"""--distribute multiworker under Slurm, without TF_CONFIG: the cluster from Slurm's
variables (SlurmClusterResolver), and tools/slurm/train.sbatch run with a stand-in srun
that starts its tasks on 127.0.0.1 (docs/distributed.md)."""
import json
import os
import stat
import subprocess
import sys

import pytest

from conftest import ROOT, cli, error_lines
from machinery import distribute
from test_distribute import WORKERS, FakeMultiWorker, free_ports
from test_readme_errors import readme_row

SBATCH = ROOT / "tools" / "slurm" / "train.sbatch"

# What srun does, for the variables SlurmClusterResolver reads: start the command once
# per task, each with its rank, all on this one node.
STAND_IN_SRUN = f"""#!{sys.executable}
import os, subprocess, sys
tasks = int(os.environ["SLURM_NTASKS"])
step = dict(SLURM_STEP_NUM_TASKS=str(tasks), SLURM_STEP_NODELIST="127.0.0.1",
            SLURM_STEP_TASKS_PER_NODE=str(tasks), SLURM_NODEID="0")
children = [subprocess.Popen(sys.argv[1:], env={{**os.environ, **step, "SLURM_PROCID": str(k),
                                                "SLURM_LOCALID": str(k)}})
            for k in range(tasks)]
codes = [child.wait() for child in children]
sys.exit(next((code for code in codes if code), 0))
"""


def slurm_step(monkeypatch, **variables):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name, value in {"SLURM_JOB_ID": "42", **variables}.items():
        monkeypatch.setenv(name, value)


def test_the_cluster_of_a_slurm_job_step_is_read_from_its_variables(monkeypatch):
    # Two nodes with two tasks each; this is task 3 (Slurm's rank), the second on node2.
    slurm_step(monkeypatch, SLURM_PROCID="3", SLURM_STEP_NUM_TASKS="4",
               SLURM_STEP_NODELIST="node[1-2]", SLURM_STEP_TASKS_PER_NODE="2(x2)")
    resolver = distribute.cluster_resolver(port=7000)
    assert resolver.cluster_spec().as_dict() == {
        "worker": ["node1:7000", "node1:7001", "node2:7000", "node2:7001"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 3)


def test_a_slurm_job_without_srun_is_one_line_error(monkeypatch, capsys, tmp_path):
    slurm_step(monkeypatch)
    monkeypatch.delenv("SLURM_PROCID", raising=False)
    (line,), code = readme_row("`--distribute multiworker` in a Slurm")
    assert cli(["--distribute", "multiworker", "--output-dir", str(tmp_path / "out")]) == code
    assert error_lines(capsys.readouterr().err) == [line]
    assert line == ("error: under Slurm, start every worker with srun (SLURM_PROCID is not "
                    "set): see docs/distributed.md")


@pytest.fixture
def stand_in_srun(tmp_path):
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "srun").write_text(STAND_IN_SRUN)
    (folder / "srun").chmod(stat.S_IRWXU)
    return folder


@pytest.mark.slow  # two worker processes: .ci/run's slow phase
def test_the_sbatch_script_trains_two_workers_and_the_chief_writes(stand_in_srun, data_dir,
                                                                   tmp_path):
    out = tmp_path / "shared" / "run"
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith("SLURM_") and key != "TF_CONFIG"}
    environment.update(
        PATH=f"{stand_in_srun}{os.pathsep}{os.environ['PATH']}", PYTHON=sys.executable,
        DATA_DIR=str(data_dir), OUTPUT_DIR=str(out), SLURM_JOB_ID="42", SLURM_NTASKS="2",
        PYTHONUNBUFFERED="1", no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    done = subprocess.run(
        ["bash", str(SBATCH), "--epochs", "1", "--limit", "200", "--batch-size", "50",
         "--no-plot", "--verbose", "2", "--slurm-port", str(free_ports(2, consecutive=True)[0])],
        capture_output=True, text=True, timeout=300, cwd=ROOT, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["distribute"] == "multiworker" and run["config"]["replicas"] == 2
    history = json.loads((out / "history.json").read_text())
    assert [len(v) for v in history.values()] == [1, 1, 1, 1]
    # Only the chief writes; the other worker's folder went when it finished.
    assert sorted(p.name for p in out.iterdir()) == [
        "history.csv", "history.json", "manifest.json", "model.keras", "run.json"]


def test_the_tfjob_manifest_runs_two_workers_on_a_shared_volume():
    job = json.loads((ROOT / "tools" / "kubernetes" / "tfjob.json").read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    workers = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert workers["replicas"] == 2 and workers["restartPolicy"] == "Never"
    pod = workers["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[:4] == ["python", "model_batchnorm.py", "--distribute", "multiworker"]
    mounted = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    shared = {v["name"] for v in pod["volumes"] if "persistentVolumeClaim" in v}
    for flag in ("--data-dir", "--output-dir"):  # both on the volume every worker mounts
        path = command[command.index(flag) + 1]
        assert any(path.startswith(mounted[name] + "/") for name in shared), (flag, path)
    # TFJob names its tasks Worker 0..N-1 and no chief: worker 0 writes the outputs.
    assert distribute.is_chief(FakeMultiWorker(WORKERS, "worker", 0))
