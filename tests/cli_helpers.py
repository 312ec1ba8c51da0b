"""What the command-line tests share: the installed `esn-video` script, the tiny config, and paths that keep every
test's data, caches and runs in its own temporary folders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXE = str(Path(sys.executable).parent / "esn-video")
TINY = str(ROOT / "configs" / "tiny.yaml")


def tiny_paths(shared: Path, models: Path) -> list[str]:
    "`--set` overrides that put the tiny config's dataset and caches under `shared` and its runs under `models`."
    return [
        "--set", f"dataset.root={shared}/data/synth-tiny",
        "--set", f"cache.root={shared}/cache/frames",
        "--set", f"features.cache_dir={shared}/cache/features",
        "--set", f"models_dir={models}",
    ]  # fmt: skip


def cli_env(**extra: str) -> dict:
    "The environment of a command: one torch thread, no MLflow server from the caller's shell, plus `extra`."
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESN_VIDEO_", "MLFLOW_"))}
    env.setdefault("OMP_NUM_THREADS", "1")
    return {**env, **extra}


def run_cli(args: list[str], env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    "Run `esn-video ARGS` in the project root as a user would; its exit status, stdout and stderr."
    return subprocess.run(
        [EXE, *args], cwd=ROOT, capture_output=True, text=True, env=env or cli_env(), timeout=timeout, **kw
    )


def start_cli(args: list[str], env: dict | None = None, **kw) -> subprocess.Popen:
    "Start `esn-video ARGS` in the background (stderr captured)."
    return subprocess.Popen(
        [EXE, *args], cwd=ROOT, env=env or cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        **kw,
    )  # fmt: skip


def wait_for_epochs(run_dir: Path, proc: subprocess.Popen, epochs: int, timeout: float = 240) -> None:
    "Wait until `run_dir` holds a checkpoint of at least `epochs` epochs while `proc` still runs."
    import torch

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        ck = run_dir / "checkpoint.pth"
        if ck.is_file():
            try:
                if int(torch.load(ck, weights_only=False).get("epoch", 0)) >= epochs:
                    return
            except Exception:  # caught mid-rename: look again
                pass
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before {epochs} epochs were checkpointed: {proc.stderr.read()[-2000:]}"
    raise AssertionError(f"no checkpoint of {epochs} epochs in {run_dir} after {timeout}s")


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


RESULT_KEYS = ("accuracy", "macro_f1", "top5", "valid_accuracy", "clip_accuracy", "confusion_matrix", "epochs_run")


def assert_same_result(run_a: Path, run_b: Path) -> None:
    "Two run folders hold the same result: every test and validation number, and the same loss/accuracy history."
    import pandas as pd

    a, b = read_json(run_a / "metrics.json"), read_json(run_b / "metrics.json")
    for k in RESULT_KEYS:
        assert a[k] == b[k], (k, a[k], b[k])
    ha, hb = pd.read_csv(run_a / "history.csv"), pd.read_csv(run_b / "history.csv")
    cols = [c for c in ha.columns if "loss" in c or "accuracy" in c]
    pd.testing.assert_frame_equal(ha[cols], hb[cols], rtol=1e-5)
