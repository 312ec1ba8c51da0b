"""The Azure VM's job end to end, here: scripts/azure/vm_job.sh against a real Azurite, on the tiny config.

As on a VM, in a temporary home with empty data, cache and models folders: the dataset is pulled from Blob
(`--dataset az://ucf101-dataset/...`), `esn-video run` executes the papermill notebook with the record sync and the
Blob caches on, and the executed notebook, the report and the job's log end in `experiment-artifacts`. Only the
package install and the deallocation are skipped (--skip-install, --no-deallocate; the deallocation is tested against
the ARM stand-in in tests/test_azure_vm_job.py). A second start finds the job done and runs nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cli_helpers import ROOT, cli_env, run_cli

SCRIPT = ROOT / "scripts" / "azure" / "vm_job.sh"


def test_vm_job_runs_the_tiny_config_from_blob_to_blob(azurite, tmp_path):
    from esn_video.cloud.storage import list_blobs, parse_location, read_blob, storage_target

    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string, HOME=str(home),
        ESN_VIDEO_DATA=str(tmp_path / "data"), ESN_VIDEO_CACHE=str(tmp_path / "cache"),
        ESN_VIDEO_MODELS=str(tmp_path / "models"), ESN_VIDEO_RUNS=str(tmp_path / "runs"),
        VENV=str(Path(sys.executable).parent.parent),  # the script runs this test's installation
    )  # fmt: skip
    # the lab's dataset in Blob, as a researcher uploads it once
    r = run_cli(["data", "synth", str(tmp_path / "upload" / "synth-tiny"), "--preset", "tiny"], env=env)
    assert r.returncode == 0, r.stderr
    assert run_cli(["storage", "create"], env=env).returncode == 0
    r = run_cli(
        ["storage", "upload", str(tmp_path / "upload" / "synth-tiny"), "az://ucf101-dataset/synth-tiny"], env=env
    )
    assert r.returncode == 0, r.stderr

    # the tiny config, reading a UCF101-layout tree (the job's --dataset points it at Blob)
    tiny = (ROOT / "configs" / "tiny.yaml").read_text()
    start, end = tiny.index("dataset:"), tiny.index("cache:")
    config = tmp_path / "tiny_blob.yaml"
    config.write_text(tiny[:start] + "dataset: {kind: ucf101, root: data/not-here}\n" + tiny[end:])
    state = tmp_path / "state"
    cmd = [str(SCRIPT), "--skip-install", "--no-deallocate", "--config", str(config),
           "--dataset", "az://ucf101-dataset/synth-tiny", "--state-dir", str(state), "--log", str(tmp_path / "job.log")]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    log = (tmp_path / "job.log").read_text()
    assert r.returncode == 0, log[-4000:] + r.stderr[-2000:]
    assert (state / "done").is_file()
    assert (tmp_path / "data").exists()  # the dataset was fetched from Blob into the (empty) data folder

    target = storage_target(env={"AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string})
    art = parse_location("az://experiment-artifacts/tiny")
    names = [b.rel for b in list_blobs(art, target)]
    notebooks = [n for n in names if n.startswith("papermill_runs/") and n.endswith(".ipynb")]
    assert len(notebooks) == 1, names
    nb = json.loads(read_blob(art, notebooks[0], target))
    assert nb["metadata"]["papermill"]["exception"] in (None, False)
    assert sum(len(c.get("outputs", [])) for c in nb["cells"] if c["cell_type"] == "code") > 0  # executed
    assert any(n.startswith("report/") and n.endswith("report.md") for n in names), names
    assert "log/job.log" in names
    # the live record sync: every run folder of the comparison, beside them
    runs = {
        n.split("/")[0]
        for n in names
        if n.endswith("/metrics.json") and n.split("/")[0] not in ("report", "papermill_runs")
    }
    assert len(runs) >= 3, names  # esn, gru and mean of the tiny config, split 1, seed 0
    assert list_blobs(parse_location("az://processed-data"), target), "no cache was pushed to processed-data"
    # no secret in what went to Blob: the Azurite key of this test is nowhere
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    for n in names:
        assert key not in read_blob(art, n, target).decode(errors="replace"), n

    # a second boot of the VM: the job is done, nothing runs again
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "already done" in (tmp_path / "job.log").read_text()


def test_vm_job_mlflow_server_mode(azurite, tmp_path):
    "workload=mlflow: the script runs the project's MLflow server with its artifacts in Blob, until it is stopped."
    import signal
    import socket
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = cli_env(
        AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string,
        HOME=str(tmp_path),
        VENV=str(Path(sys.executable).parent.parent),
    )
    state = tmp_path / "state"
    cmd = [str(SCRIPT), "--skip-install", "--mlflow-server", "--host", "127.0.0.1", "--port", str(port), "--state-dir", str(state), "--log", str(tmp_path / "job.log")]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        deadline, ok = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None and not ok:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    ok = r.status == 200
            except OSError:
                time.sleep(1)
        assert ok, (tmp_path / "job.log").read_text()[-3000:]
        assert (state / "mlflow.db").is_file()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
