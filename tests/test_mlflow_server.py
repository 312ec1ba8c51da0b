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
    d = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{d / 'mlflow.db'}",
        "--artifacts-destination",
        (d / "artifacts").as_uri(),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    log = open(d / "server.log", "w")
    proc = subprocess.Popen(cmd, cwd=d, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 45
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited with {proc.returncode}:\n{(d / 'server.log').read_text()[-3000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"mlflow server did not answer in 45 s:\n{(d / 'server.log').read_text()[-3000:]}")
            time.sleep(0.3)
        yield url, d
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


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
