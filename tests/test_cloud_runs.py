"""Runs with their records in Blob Storage, on a real Azurite: live sync of a run folder, SIGTERM's final sync, resume
on a fresh machine to the same result; a tiny experiment through a real MLflow server (artifacts in Azurite) whose
report read back from the server equals the local one; and the emulator's key in none of the files the run produced.

Every command runs in a subprocess as a user would run it, with AZURE_STORAGE_CONNECTION_STRING set to the
emulator's (a random key made for this test session)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
from pathlib import Path

import pandas as pd
import pytest
from cli_helpers import TINY, assert_same_result, cli_env, run_cli, start_cli, tiny_paths, wait_for_epochs

from esn_video.cloud.azurite import AZURITE_ACCOUNT, Azurite

ARTIFACTS = "experiment-artifacts"
# A GRU with enough epochs that a signal lands part-way; checkpoints are written after every epoch.
GRU = ["--model", "gru", "--set", "training.epochs=60", "--set", "models.gru.hp.hidden=64"]


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    "One Azurite for the module, with the artifacts container."
    from azure.storage.blob import BlobServiceClient

    with Azurite(tmp_path_factory.mktemp("azurite")) as az:
        BlobServiceClient.from_connection_string(az.connection_string).create_container(ARTIFACTS)
        yield az


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    "The tiny dataset and its caches, shared by the tests (each has its own models folder)."
    return tmp_path_factory.mktemp("cloud-runs")


def _blobs(az, prefix: str = "") -> dict[str, bytes]:
    from azure.storage.blob import BlobServiceClient

    cc = BlobServiceClient.from_connection_string(az.connection_string).get_container_client(ARTIFACTS)
    return {b.name: cc.download_blob(b.name).readall() for b in cc.list_blobs(name_starts_with=prefix or None)}


def _sync(every_s: float) -> list[str]:
    return ["--set", "storage.sync=true", "--set", f"storage.sync_every_s={every_s}"]


def test_sigterm_syncs_then_a_fresh_machine_resumes_to_the_same_result(azurite, shared, tmp_path):
    env = cli_env(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    # the uninterrupted run (its own experiment name, so its own place in Blob)
    whole = tmp_path / "whole"
    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, whole), *_sync(2), "--set", "experiment=tiny-whole",
                 "--quiet"], env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    run_a = whole / "tiny-whole" / "gru-split1-seed0"
    assert (run_a / "metrics.json").is_file()
    synced = _blobs(azurite, "tiny-whole/gru-split1-seed0/")
    names = {k.rsplit("/", 1)[-1] for k in synced}
    assert {"metrics.json", "history.csv", "checkpoint.pth", "best.pth", "status.json", "config.yaml"} <= names, names
    assert any(n.startswith("events.out.tfevents") for n in names), names  # TensorBoard's events
    assert json.loads(synced["tiny-whole/gru-split1-seed0/status.json"])["state"] == "finished"  # the end's sync
    assert synced["tiny-whole/gru-split1-seed0/metrics.json"] == (run_a / "metrics.json").read_bytes()

    # the same run on a machine that is shut down part-way (SIGTERM); periodic syncs too rare to happen
    first = tmp_path / "first-machine"
    run_b = first / "tiny" / "gru-split1-seed0"
    p = start_cli(["train", TINY, *GRU, *tiny_paths(shared, first), *_sync(3600), "--quiet"], env=env)
    wait_for_epochs(run_b, p, 3)
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == -signal.SIGTERM, (p.returncode, err[-2000:])  # it still dies of the signal, as before
    assert "SIGTERM: sending gru-split1-seed0" in err, err[-2000:]
    remote = _blobs(azurite, "tiny/gru-split1-seed0/")
    # the last checkpoint is in Blob, byte for byte the one on the dead machine's disk
    assert remote["tiny/gru-split1-seed0/checkpoint.pth"] == (run_b / "checkpoint.pth").read_bytes()
    assert remote["tiny/gru-split1-seed0/history.csv"] == (run_b / "history.csv").read_bytes()
    assert json.loads(remote["tiny/gru-split1-seed0/status.json"])["state"] == "running"
    assert not any(k.endswith(".tmp") for k in remote)

    # a fresh machine: an empty models folder; --resume takes the synced copy and continues
    shutil.rmtree(first)
    fresh = tmp_path / "fresh-machine"
    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, fresh), *_sync(3600)], env=env)
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr[-2000:]  # not silently restarted from scratch
    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, fresh), *_sync(3600), "--resume", "--quiet"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    run_c = fresh / "tiny" / "gru-split1-seed0"
    b = json.loads((run_c / "metrics.json").read_text())
    assert b["resumed_from_epoch"] >= 3
    assert_same_result(run_a, run_c)
    after = _blobs(azurite, "tiny/gru-split1-seed0/")
    assert json.loads(after["tiny/gru-split1-seed0/status.json"])["state"] == "finished"
    assert after["tiny/gru-split1-seed0/metrics.json"] == (run_c / "metrics.json").read_bytes()

    # --overwrite starts again and deletes the old copy first (no stale record left in Blob)
    stale = "tiny/gru-split1-seed0/stale.txt"
    from azure.storage.blob import BlobServiceClient

    BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(ARTIFACTS, stale).upload_blob(
        b"x"
    )
    r = run_cli(["train", TINY, "--model", "gru", "--set", "training.epochs=2", *tiny_paths(shared, fresh),
                 *_sync(3600), "--overwrite", "--quiet"], env=env)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert stale not in _blobs(azurite, "tiny/gru-split1-seed0/")


def test_ctrl_c_ends_the_run_interrupted_and_synced(azurite, shared, tmp_path):
    "SIGINT (Ctrl-C): the run is marked interrupted, then the final sync sends that state with the last checkpoint."
    env = cli_env(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    models = tmp_path / "models"
    run = models / "tiny-ctrl-c" / "gru-split1-seed0"
    p = start_cli(["train", TINY, *GRU, *tiny_paths(shared, models), *_sync(3600), "--set", "experiment=tiny-ctrl-c",
                   "--quiet"], env=env)  # fmt: skip
    wait_for_epochs(run, p, 2)
    p.send_signal(signal.SIGINT)
    err = p.communicate(timeout=120)[1]
    assert p.returncode == 130 and "--resume" in err, (p.returncode, err[-2000:])
    remote = _blobs(azurite, "tiny-ctrl-c/gru-split1-seed0/")
    assert json.loads(remote["tiny-ctrl-c/gru-split1-seed0/status.json"])["state"] == "interrupted"
    assert remote["tiny-ctrl-c/gru-split1-seed0/checkpoint.pth"] == (run / "checkpoint.pth").read_bytes()


def test_sync_without_container_is_a_usage_error(azurite, shared, tmp_path):
    env = cli_env(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
    models = tmp_path / "models"
    r = run_cli(["train", TINY, "--model", "mean", *tiny_paths(shared, models), *_sync(5),
                 "--set", "storage.containers.artifacts=no-such-container"], env=env)  # fmt: skip
    assert r.returncode == 2, r.stderr[-2000:]
    assert "no-such-container" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert azurite.key not in r.stderr


# --- a tiny experiment through a real MLflow server with its artifacts in Azurite ---------------------------------


EXP = "tiny-tracked"  # its own place in Blob and in MLflow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracked(azurite, shared, tmp_path_factory):
    "`esn-video run` (papermill) of the tiny config, logging to a real MLflow server, its run folders synced to Blob."
    from esn_video.cloud.mlflow_server import MlflowServer

    d = tmp_path_factory.mktemp("tracked")
    mp = pytest.MonkeyPatch()
    mp.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    dest = f"wasbs://{ARTIFACTS}@{AZURITE_ACCOUNT}.blob.core.windows.net/mlflow"
    srv = MlflowServer(dest, f"sqlite:///{d / 'server' / 'mlflow.db'}", port=_free_port(), workers=1,
                       log_path=d / "server" / "server.log")  # fmt: skip
    try:
        with srv:
            models, runs = d / "models", d / "papermill_runs"
            env = cli_env(AZURE_STORAGE_CONNECTION_STRING=azurite.connection_string)
            args = ["run", TINY, *tiny_paths(shared, models), "--set", "mlflow.enabled=true",
                    "--set", f"mlflow.tracking_uri={srv.url}", *_sync(5), "--output-dir", str(runs), "--set", f"experiment={EXP}"]  # fmt: skip
            r = run_cli(args, env=env, timeout=900)
            (d / "run.stdout").write_text(r.stdout)
            (d / "run.stderr").write_text(r.stderr)
            assert r.returncode == 0, r.stderr[-3000:]
            out = d / "from-mlflow"
            rep = run_cli(["report", "--from-mlflow", srv.url, EXP, "--out", str(out)], env=cli_env())
            (d / "report.stdout").write_text(rep.stdout)
            (d / "report.stderr").write_text(rep.stderr)
            yield {"dir": d, "models": models, "runs": runs, "server": srv, "run": r, "report": rep, "out": out}
    finally:
        mp.undo()


def test_child_runs_carry_what_the_dashboard_compares(tracked):
    from mlflow import MlflowClient

    c = MlflowClient(tracked["server"].url)
    exp = c.get_experiment_by_name(EXP)
    runs = [r for r in c.search_runs([exp.experiment_id]) if r.data.tags.get("comparison") != "parent"]
    assert {r.data.tags["model"] for r in runs} == {"esn", "gru", "mean"}
    for r in runs:
        rec = json.loads((tracked["models"] / EXP / r.info.run_name / "metrics.json").read_text())
        assert r.data.tags["kind"] == rec["kind"] and r.data.tags["split"] == "1" and r.data.tags["seed"] == "0"
        assert r.data.tags.get("mlflow.parentRunId")  # nested under the comparison's run in the UI
        for k in ("fit_seconds", "trainable_params", "fixed_params", "accuracy", "macro_f1"):
            assert r.data.metrics[k] == pytest.approx(rec[k]), k
        assert r.info.artifact_uri.startswith("mlflow-artifacts:")  # served by the server from Azurite


def test_report_from_the_server_equals_the_local_one(tracked):
    rep = tracked["report"]
    assert rep.returncode == 0, rep.stderr[-3000:]
    local = pd.read_csv(tracked["models"] / EXP / "report" / "results.csv")
    remote = pd.read_csv(tracked["out"] / "report" / "results.csv")
    pd.testing.assert_frame_equal(local, remote)
    assert len(local) == 3
    local_summary = json.loads((tracked["models"] / EXP / "report" / "summary.json").read_text())
    assert json.loads((tracked["out"] / "report" / "summary.json").read_text()) == local_summary
    # the table `esn-video run` printed from the folder is the one `esn-video report --from-mlflow` prints
    table = rep.stdout.split("\n- ESN", 1)[0].strip().splitlines()
    assert table and all(line in tracked["run"].stdout for line in table), (table, tracked["run"].stdout[-3000:])


def test_run_folders_and_notebook_synced(tracked, azurite):
    blobs = _blobs(azurite, f"{EXP}/")
    for run in ("esn-split1-seed0", "gru-split1-seed0", "mean-split1-seed0"):
        assert blobs[f"{EXP}/{run}/metrics.json"] == (tracked["models"] / EXP / run / "metrics.json").read_bytes()
    nb = sorted(tracked["runs"].glob("*.ipynb"))
    assert len(nb) == 1
    assert blobs[f"{EXP}/papermill_runs/{nb[0].name}"] == nb[0].read_bytes()


def test_no_key_in_any_record(tracked, azurite):
    "The emulator's key and connection string are in none of the files the run produced, nor in what went to Blob."
    secrets = [azurite.key, azurite.connection_string, azurite.key.rstrip("=")]
    files = [p for p in tracked["dir"].rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".json", ".csv", ".ipynb", ".db", ".pth", ".yaml", ".md", ".png"} <= kinds, kinds
    assert any(p.name.startswith("events.out.tfevents") for p in files)
    assert (tracked["dir"] / "server" / "server.log").is_file()
    for p in files:
        data = p.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"the storage key is in {p}"
    blobs = _blobs(azurite)  # run folders, executed notebook and MLflow's artifacts
    assert any(k.startswith("mlflow/") for k in blobs) and any(k.startswith(f"{EXP}/") for k in blobs)
    for name, data in blobs.items():
        for s in secrets:
            assert s.encode() not in data, f"the storage key is in blob {name}"
    # and none in MLflow's params or tags
    from mlflow import MlflowClient

    c = MlflowClient(tracked["server"].url)
    exp = c.get_experiment_by_name(EXP)
    for r in c.search_runs([exp.experiment_id]):
        text = json.dumps({"params": r.data.params, "tags": r.data.tags})
        assert azurite.key not in text
