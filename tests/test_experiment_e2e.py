"""End to end: `esn-video train` killed with SIGKILL part-way and resumed, `esn-video run` through real papermill,
and config errors, each in a subprocess as a user would run them (tiny generated dataset, a few seconds each)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from cli_helpers import EXE, ROOT, TINY, assert_same_result, cli_env, run_cli, tiny_paths


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    "Data and caches shared by the tests of this module (each test has its own models folder)."
    return tmp_path_factory.mktemp("e2e")


# A GRU with enough epochs that a kill lands part-way; checkpoints are written after every epoch.
GRU = ["--model", "gru", "--set", "training.epochs=60", "--set", "models.gru.hp.hidden=64"]


def test_bad_config_keys_are_named(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(Path(TINY).read_text().replace("training:", "trainig:"))
    r = run_cli(["train", str(bad)])
    assert r.returncode == 2, r.stderr
    assert "unknown key 'trainig'" in r.stderr and "training" in r.stderr and str(bad) in r.stderr
    r = run_cli(["train", TINY, "--model", "gru", "--set", "training.schedule=cosine"])
    assert r.returncode == 2 and "one_cycle, plateau" in r.stderr, r.stderr
    r = run_cli(["compare", TINY, "--set", "models.gru.hp.hidden_szie=8"])
    assert r.returncode == 2 and "hidden_szie" in r.stderr, r.stderr


def test_killed_run_resumes_to_the_same_metrics(shared, tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, whole), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    run_a = whole / "tiny" / "gru-split1-seed0"
    assert (run_a / "metrics.json").is_file()

    run_b = killed / "tiny" / "gru-split1-seed0"
    p = subprocess.Popen([EXE, "train", TINY, *GRU, *tiny_paths(shared, killed), "--quiet"], cwd=ROOT, env=cli_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 240
    while time.time() < deadline and p.poll() is None:
        if (run_b / "checkpoint.pth").is_file() and (run_b / "history.csv").is_file():
            try:  # the CSV may be caught mid-write: then look again
                rows = len(pd.read_csv(run_b / "history.csv"))
            except (OSError, ValueError):
                rows = 0
            if rows >= 3:
                break
        time.sleep(0.02)
    assert p.poll() is None, "the run finished before it could be killed; make it longer"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    assert p.returncode == -signal.SIGKILL
    assert json.loads((run_b / "status.json").read_text())["state"] == "running"  # killed, not finished
    assert not (run_b / "metrics.json").exists()

    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, killed)])
    assert r.returncode == 2 and "--resume" in r.stderr, r.stderr  # not silently restarted
    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, killed), "--resume", "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    b = json.loads((run_b / "metrics.json").read_text())
    # history.csv gets epoch k's row just before checkpoint k is written: 3 rows seen means >= 2 checkpointed epochs
    assert b["resumed_from_epoch"] >= 2
    assert_same_result(run_a, run_b)
    for f in ("best.pth", "last.pth", "config.yaml", "environment.json", "history.csv", "curves.png", "confusion.png"):
        assert (run_b / f).is_file(), f

    r = run_cli(["train", TINY, *GRU, *tiny_paths(shared, killed)])
    assert r.returncode == 2 and "--overwrite" in r.stderr and "finished" in r.stderr, r.stderr
    r = run_cli(["evaluate", str(run_b), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    ev = json.loads((run_b / "evaluation.json").read_text())
    assert ev["accuracy"] == b["accuracy"]
    if not torch.cuda.is_available():  # an unusable device: a clear usage error, and the evaluation kept
        r = run_cli(["evaluate", str(run_b), "--device", "cuda"])
        assert r.returncode == 2 and "error:" in r.stderr and "CUDA is not available" in r.stderr, r.stderr
        assert json.loads((run_b / "evaluation.json").read_text()) == ev


def test_run_executes_the_training_notebook(shared, tmp_path):
    out = tmp_path / "papermill_runs"
    paths = tiny_paths(shared, tmp_path / "models")
    r = run_cli(["run", TINY, *paths, "--set", "mlflow.enabled=true", "--output-dir", str(out)])  # MLflow as shipped
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    nbs = list(out.glob("*_tiny.ipynb"))
    assert len(nbs) == 1, nbs
    nb = json.loads(nbs[0].read_text())
    text = json.dumps(nb)
    assert "accuracy %" in text and "image/png" in text  # the table and the plots are in the record
    params = [c for c in nb["cells"] if "injected-parameters" in c.get("metadata", {}).get("tags", [])]
    assert params and "scratch = False" in "".join(params[0]["source"])
    assert 'config = "configs/tiny.yaml"' in "".join(params[0]["source"])  # the project's path, not this checkout's
    pm = nb["metadata"]["papermill"]  # papermill's own note of what ran: project paths, not the notebook's whole text
    assert pm["input_path"] == "nbs/90_train.ipynb" and pm["output_path"] == str(nbs[0]), pm["input_path"]
    # a record a reader can trust: no warnings, progress bars or MLflow log lines (the search imports Optuna, too)
    stderr = [o for c in nb["cells"] for o in c.get("outputs", []) if o.get("name") == "stderr"]
    assert not stderr, [o["text"] for o in stderr]
    assert "accuracy %" in r.stdout and "esn" in r.stdout  # the table is printed
    summary = json.loads((tmp_path / "models" / "tiny" / "report" / "summary.json").read_text())
    assert set(summary) == {"esn", "gru", "mean"}


def test_compare_cross_validates_over_official_splits_and_seeds(shared, tmp_path):
    "`esn-video compare` over UCF101's three official splits and two seeds: one run each, mean and spread reported."
    models = tmp_path / "models"
    over = ["--set", "evaluation.splits=[1, 2, 3]", "--set", "evaluation.seeds=[0, 1]"]
    r = run_cli(["compare", TINY, "--models", "esn,mean", *over, *tiny_paths(shared, models), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    runs = {p.parent.name: json.loads(p.read_text()) for p in (models / "tiny").glob("*/metrics.json")}
    assert set(runs) == {f"{m}-split{k}-seed{s}" for m in ("esn", "mean") for k in (1, 2, 3) for s in (0, 1)}
    # the three splits test on different groups (UCF101's groups 1-7, 8-14, 15-21): their test sets differ
    test_sizes = {k: runs[f"mean-split{k}-seed0"]["n_test_videos"] for k in (1, 2, 3)}
    assert all(n > 0 for n in test_sizes.values()), test_sizes
    esn = [runs[f"esn-split{k}-seed{s}"] for k in (1, 2, 3) for s in (0, 1)]
    summary = json.loads((models / "tiny" / "report" / "summary.json").read_text())
    acc = np.array([x["accuracy"] for x in esn])
    assert abs(summary["esn"]["accuracy"] - acc.mean()) < 1e-9
    assert abs(summary["esn"]["accuracy_std"] - acc.std(ddof=1)) < 1e-9
    results = pd.read_csv(models / "tiny" / "report" / "results.csv")
    assert len(results) == 12 and sorted(set(results["split"])) == [1, 2, 3] and sorted(set(results["seed"])) == [0, 1]
    report = (models / "tiny" / "report" / "report.md").read_text()
    assert "splits [1, 2, 3]" in report and "seeds [0, 1]" in report, report[:2000]
    assert "±" in r.stdout  # the printed table shows the spread over the six runs
