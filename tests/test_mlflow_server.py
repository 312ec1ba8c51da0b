"""A real `mlflow server` on loopback: a short training run logs through `MLflowCallback`, and we read it all back.

The server is started by the test (free port, temporary SQLite backend and artifact folder) and stopped at the end.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from esn_video.features import FeatureSet, feature_dataloaders
from esn_video.learner import build_learner, train
from esn_video.models.bench import event_order_task
from esn_video.tracking import MlflowSettings


def _toy(seed: int) -> tuple[FeatureSet, FeatureSet, FeatureSet]:
    "Train, valid and test sets of the event-order task (the class is the order of a few events)."
    out = []
    for k, n in enumerate((48, 24, 24)):
        x, ln, y = event_order_task(n, n_steps=8, n_features=6, n_classes=3, noise=0.3, seed=10 * seed + k)
        out.append(FeatureSet(x, ln, y, torch.arange(n), torch.zeros(n, dtype=torch.long)))
    return tuple(out)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    "A real server (`cloud.mlflow_server.MlflowServer`) with a temporary SQLite backend and a local artifact folder."
    from esn_video.cloud.mlflow_server import MlflowServer

    d = tmp_path_factory.mktemp("mlflow_server")
    srv = MlflowServer((d / "artifacts").as_posix(), f"sqlite:///{d / 'mlflow.db'}", port=_free_port(), workers=1,
                       log_path=d / "server.log")  # fmt: skip
    with srv:
        yield srv.url, d


class _GRU(nn.Module):
    def __init__(self, n_in: int, n_classes: int, hidden: int = 12):
        super().__init__()
        self.rnn, self.head = nn.GRU(n_in, hidden, batch_first=True), nn.Linear(hidden, n_classes)

    def forward(self, x, lengths=None):
        return self.head(self.rnn(x)[0][:, -1])


def test_training_run_logged_to_real_server(mlflow_server, tmp_path):
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    url, server_dir = mlflow_server
    torch.manual_seed(0)
    tr, va, te = _toy(seed=6)
    dls = feature_dataloaders(tr, va, te, bs=16, device="cpu")
    settings = MlflowSettings(
        tracking_uri=url,
        experiment="server-test",
        run_name="gru-tiny",
        params={"model": {"name": "gru", "hidden": 12}, "cloud": {"storage_key": "NOT-A-REAL-KEY", "account": "acct"}},
        tags={"purpose": "test"},
    )
    learn = build_learner(_GRU(6, 3), dls, run_dir=tmp_path / "run", lr=2e-2, mlflow=settings, tensorboard=False)
    res = train(learn, 3)

    c = MlflowClient(url)
    run = c.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "gru-tiny"
    assert run.data.tags["purpose"] == "test"
    assert run.data.params["model.hidden"] == "12"
    assert run.data.params["cloud.account"] == "acct"
    assert "cloud.storage_key" not in run.data.params
    assert all("NOT-A-REAL-KEY" not in v for v in run.data.params.values())
    hist = pd.read_csv(tmp_path / "run" / "history.csv")
    for name in ("valid_loss", "valid_accuracy", "valid_macro_f1", "test_accuracy", "test_loss"):
        logged = sorted(c.get_metric_history(run.info.run_id, f"history/{name}"), key=lambda m: m.step)
        assert [m.step for m in logged] == [0, 1, 2]
        assert [m.value for m in logged] == pytest.approx(hist[name].tolist(), rel=1e-6)
    assert run.data.metrics["test_accuracy"] == pytest.approx(res.test["accuracy"])
    assert run.data.metrics["train_seconds"] == pytest.approx(res.train_seconds)
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"history.csv", "curves.png", "model_summary.txt", "confusion_matrix_test.png"} <= arts
    got = c.download_artifacts(run.info.run_id, "history.csv", str(tmp_path / "dl"))
    assert Path(got).read_text() == (tmp_path / "run" / "history.csv").read_text()
    # the artifacts went through the server into its artifact folder, not into our run folder
    assert list((server_dir / "artifacts").rglob("history.csv"))


def test_failed_fit_marks_server_run_failed(mlflow_server, tmp_path):
    from fastai.callback.core import Callback
    from mlflow import MlflowClient

    class _Crash(Callback):
        def after_batch(self):
            if self.train_iter == 1:
                raise RuntimeError("disk on fire")

    url, _ = mlflow_server
    tr, va, te = _toy(seed=7)
    dls = feature_dataloaders(tr, va, te, bs=16, device="cpu")
    settings = MlflowSettings(tracking_uri=url, experiment="server-test", run_name="crash")
    learn = build_learner(_GRU(6, 3), dls, run_dir=tmp_path / "run", mlflow=settings, tensorboard=False, cbs=[_Crash()])
    with pytest.raises(RuntimeError, match="disk on fire"):
        train(learn, 2)
    c = MlflowClient(url)
    exp = c.get_experiment_by_name("server-test")
    runs = c.search_runs([exp.experiment_id], filter_string="attributes.run_name = 'crash'")
    assert len(runs) == 1
    assert runs[0].info.status == "FAILED"
    assert "disk on fire" in runs[0].data.tags["error"]


# --- the server with its artifacts in Azure Blob (a real Azurite), and its command --------------------------------

CONTAINER = "experiment-artifacts"


@pytest.fixture(scope="module")
def blob_server(tmp_path_factory):
    "Azurite with the `experiment-artifacts` container, and a server whose artifacts go there (wasbs://, devstoreaccount1)."
    from azure.storage.blob import BlobServiceClient

    from esn_video.cloud.azurite import AZURITE_ACCOUNT, Azurite
    from esn_video.cloud.mlflow_server import MlflowServer

    d = tmp_path_factory.mktemp("mlflow_blob")
    with Azurite(d / "azurite") as az:
        BlobServiceClient.from_connection_string(az.connection_string).create_container(CONTAINER)
        dest = f"wasbs://{CONTAINER}@{AZURITE_ACCOUNT}.blob.core.windows.net/mlflow"
        mp = pytest.MonkeyPatch()
        mp.setenv("AZURE_STORAGE_CONNECTION_STRING", az.connection_string)  # the server inherits it
        srv = MlflowServer(
            dest, f"sqlite:///{d / 'mlflow.db'}", port=_free_port(), workers=1, log_path=d / "server.log"
        )
        try:
            with srv:
                mp.delenv("AZURE_STORAGE_CONNECTION_STRING")  # clients need no storage credential: the server proxies
                yield srv, az, d
        finally:
            mp.undo()


def _blobs(az) -> dict[str, bytes]:
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(az.connection_string).get_container_client(CONTAINER)
    return {b.name: cc.download_blob(b.name).readall() for b in cc.list_blobs()}


def test_training_run_artifacts_in_azurite(blob_server, tmp_path):
    from mlflow import MlflowClient

    srv, az, d = blob_server
    assert "AZURE_STORAGE_CONNECTION_STRING" not in os.environ
    torch.manual_seed(0)
    tr, va, te = _toy(seed=3)
    dls = feature_dataloaders(tr, va, te, bs=16, device="cpu")
    settings = MlflowSettings(tracking_uri=srv.url, experiment="blob-test", run_name="gru-blob",
                              params={"model": {"name": "gru"}}, tags={"kind": "gru"})  # fmt: skip
    learn = build_learner(_GRU(6, 3), dls, run_dir=tmp_path / "run", lr=2e-2, mlflow=settings, tensorboard=False)
    res = train(learn, 2)

    c = MlflowClient(srv.url)
    run = c.get_run(res.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # served (proxied) by the server
    arts = {a.path for a in c.list_artifacts(run.info.run_id)}
    assert {"history.csv", "curves.png", "model_summary.txt"} <= arts
    for name in ("history.csv", "model_summary.txt"):
        got = c.download_artifacts(run.info.run_id, name, str(tmp_path / "dl"))
        assert Path(got).read_bytes() == (tmp_path / "run" / name).read_bytes()
    # the bytes are really in Azurite's container, under the destination's path, and nowhere on the server's disk
    blobs = _blobs(az)
    mine = {k: v for k, v in blobs.items() if run.info.run_id in k}
    assert all(k.startswith("mlflow/") for k in mine)
    by_name = {k.rsplit("/", 1)[-1]: v for k, v in mine.items()}
    assert by_name["history.csv"] == (tmp_path / "run" / "history.csv").read_bytes()
    assert by_name["curves.png"] == (tmp_path / "run" / "curves.png").read_bytes()
    assert not list(d.rglob("history.csv"))
    assert az.key not in (d / "server.log").read_text(errors="replace")


def _cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("esn-video")
    return subprocess.run([str(exe), "mlflow-server", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


def test_cli_bad_input_exit_2(blob_server, tmp_path):
    "Each mistake is one line on stderr and exit status 2; nothing starts, nothing local is touched."
    srv, az, _ = blob_server
    good = {"AZURE_STORAGE_CONNECTION_STRING": az.connection_string}
    dest = srv.artifacts_destination
    db = f"sqlite:///{tmp_path / 'db' / 'm.db'}"
    wrong_key = az.connection_string.replace(az.key, "A" * 86 + "==")
    cases = [
        (["--port", str(srv.port), "--artifacts-destination", dest, "--backend-store-uri", db], good, "is in use"),
        (["--port", str(_free_port()), "--artifacts-destination", dest, "--backend-store-uri", "nope"], good,
         "is not a database URI"),
        (["--port", str(_free_port()), "--artifacts-destination", dest.replace(CONTAINER, "missing-one"),
          "--backend-store-uri", db], good, "does not exist"),
        (["--port", str(_free_port()), "--artifacts-destination", dest, "--backend-store-uri", db],
         {"AZURE_STORAGE_CONNECTION_STRING": wrong_key}, "refused the connection string"),
        (["--port", str(_free_port()), "--artifacts-destination", "wasbs://experiment-artifacts/mlflow"], good,
         "wasbs://CONTAINER@ACCOUNT"),
    ]  # fmt: skip
    for args, env, words in cases:
        r = _cli(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert words in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert az.key not in r.stderr + r.stdout
    assert srv.healthy()  # the running server was not disturbed
    assert not (tmp_path / "db" / "m.db").exists()


def test_cli_runs_until_sigterm(blob_server, tmp_path):
    "`esn-video mlflow-server` serves until SIGTERM, then stops the server and its workers and exits 0."
    from mlflow import MlflowClient

    srv, az, _ = blob_server
    port = _free_port()
    exe = Path(sys.executable).with_name("esn-video")
    cmd = [str(exe), "mlflow-server", "--port", str(port), "--workers", "1", "--backend-store-uri",
           f"sqlite:///{tmp_path / 'cli.db'}", "--log", str(tmp_path / "cli.log")]  # fmt: skip
    env = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": az.connection_string}  # default destination from it
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url, t0 = f"http://127.0.0.1:{port}", time.time()
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1):
                    break
            except OSError:
                assert p.poll() is None, p.communicate()
                assert time.time() - t0 < 90, "the command's server did not answer in 90 s"
                time.sleep(0.3)
        c = MlflowClient(url)
        rid = c.create_run(c.create_experiment("cli-test")).info.run_id
        (tmp_path / "x.txt").write_text("through the command's server")
        c.log_artifact(rid, str(tmp_path / "x.txt"))
        assert any(k.endswith(f"{rid}/artifacts/x.txt") for k in _blobs(az))
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    assert f"MLflow server on {url}" in out
    assert az.key not in out + err
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more: no worker left behind
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
