"""What a careless or unlucky user does, through the real command line (each test failed on the code before the
reliability fixes): nothing that was done is lost, nothing stale is served, and every mistake is one line that names
the file or value and what to do, with exit status 2 for a usage error and 1 for a failure.

Data-layer cases (a generated dataset asked into a real tree, two cache builds at once, killed workers, unwritable
data folders, every video broken, missing videos, a changed video) are in `test_data_pipeline.py`."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
import torch
from cli_helpers import TINY, cli_env, read_json, run_cli, start_cli, tiny_paths, wait_for_epochs

# a GRU long enough that a command can be sent to it, or a signal, while it trains
LONG_GRU = ["--model", "gru", "--set", "training.epochs=100000", "--set", "models.gru.hp.hidden=64", "--quiet"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    "The tiny dataset and its caches, made once for the module (each test has its own runs folder)."
    d = tmp_path_factory.mktemp("reliability")
    r = run_cli(["train", TINY, "--model", "mean", *tiny_paths(d, d / "warm-up"), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    return d


def _one_line_error(r: subprocess.CompletedProcess, code: int, *words: str) -> str:
    assert r.returncode == code, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    err = r.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in err, (w, err)
    return err


def _finished_mean(shared: Path, models: Path) -> Path:
    r = run_cli(["train", TINY, "--model", "mean", *tiny_paths(shared, models), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    return models / "tiny" / "mean-split1-seed0"


def test_bad_values_are_refused_before_anything_is_made(tmp_path):
    "Item 10: out-of-range hyperparameters, a split or seed that does not exist, a missing GPU: refused at load time."
    data = tmp_path / "nothing-yet"
    paths = tiny_paths(data, data / "models")
    cases = [
        (["--model", "gru", "--set", "models.gru.hp.hidden=0"], "hidden"),
        (["--model", "gru", "--set", "models.gru.hp.hidden=16.5"], "16.5"),
        (["--model", "gru", "--set", "models.gru.hp.dropout=2"], "dropout"),
        (["--model", "esn", "--set", "models.esn.hp.n_units=0"], "n_units"),
        (["--model", "esn", "--set", "models.esn.hp.spectral_radius=-3"], "spectral_radius"),
        (["--model", "mean", "--split", "7"], "--split: split 7"),
        (["--model", "mean", "--seed", "-1"], "--seed: seed -1"),
    ]
    if not torch.cuda.is_available():
        cases.append((["--model", "mean", "--set", "training.device=cuda"], "training.device"))
    for args, word in cases:
        _one_line_error(run_cli(["train", TINY, *args, *paths]), 2, word)
    assert not data.exists(), sorted(p.name for p in data.rglob("*"))  # no dataset, cache or run folder was made
    r = run_cli(["train", TINY, "--model", "mean", "--set", "training.lr=1e-3", *paths, "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]  # 1e-3 is a number; the corrected command runs
    assert (data / "models/tiny/mean-split1-seed0/metrics.json").is_file()


def test_overwrite_validates_before_it_deletes(shared, tmp_path):
    "Item 3: `--overwrite` with a bad value leaves the finished run as it was."
    run = _finished_mean(shared, tmp_path / "models")
    before = {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()}
    bad = [["--set", "training.device=gpu"], ["--set", "models.mean.hp.dropout=abc"], ["--split", "7"]]
    for args in bad:
        r = run_cli(["train", TINY, "--model", "mean", "--overwrite", *args, *tiny_paths(shared, tmp_path / "models")])
        _one_line_error(r, 2)
        assert {f.name: f.read_bytes() for f in run.iterdir() if f.is_file()} == before, args


def test_resume_keeps_the_runs_config(shared, tmp_path):
    "Item 4: a resumed run continues under its recorded config; a change is refused, naming the key, and nothing is rewritten."
    models = tmp_path / "models"
    run = models / "tiny" / "gru-split1-seed0"
    p = start_cli(["train", TINY, *LONG_GRU, *tiny_paths(shared, models)])
    wait_for_epochs(run, p, 2)
    p.kill()
    p.wait()
    config = (run / "config.yaml").read_bytes()
    for over, key in (("models.gru.hp.hidden=32", "model.hp.hidden"), ("training.lr=0.5", "training.lr")):
        r = run_cli(["train", TINY, *LONG_GRU, "--resume", "--set", over, *tiny_paths(shared, models)])
        _one_line_error(r, 2, key, "--overwrite")
        assert (run / "config.yaml").read_bytes() == config
    r = run_cli(["train", TINY, *LONG_GRU, "--set", "training.epochs=5", *tiny_paths(shared, models)])
    _one_line_error(r, 2, "interrupted", "--resume")  # neither flag: refused, and the message says why


def test_compare_reuses_only_runs_made_by_the_same_config(shared, tmp_path):
    "Item 5: a finished run made by another config (epochs, dataset root) is neither reused nor overwritten."
    models = tmp_path / "models"
    r = run_cli(["compare", TINY, "--models", "mean", *tiny_paths(shared, models), "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    metrics = (models / "tiny/mean-split1-seed0/metrics.json").read_bytes()
    r = run_cli(["compare", TINY, "--models", "mean", "--set", "training.epochs=2", *tiny_paths(shared, models)])
    _one_line_error(r, 2, "training.epochs: run 4, config 2", "--overwrite")
    other = [*tiny_paths(shared, models), "--set", f"dataset.root={shared}/data/synth-other"]
    r = run_cli(["compare", TINY, "--models", "mean", *other])
    _one_line_error(r, 2, "dataset.root")
    assert (models / "tiny/mean-split1-seed0/metrics.json").read_bytes() == metrics
    r = run_cli(["compare", TINY, "--models", "mean", *tiny_paths(shared, models), "--quiet"])
    assert r.returncode == 0 and "accuracy %" in r.stdout, r.stderr[-3000:]  # the same config: reused


def test_project_folders_follow_their_variables(tmp_path):
    "Item 6: ESN_VIDEO_MODELS, ESN_VIDEO_DATA and ESN_VIDEO_CACHE move the runs, the dataset and the caches."
    env = cli_env(
        ESN_VIDEO_MODELS=str(tmp_path / "m"), ESN_VIDEO_DATA=str(tmp_path / "d"), ESN_VIDEO_CACHE=str(tmp_path / "c")
    )
    r = run_cli(["train", TINY, "--model", "mean", "--quiet"], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "m/tiny/mean-split1-seed0/metrics.json").is_file()
    assert (tmp_path / "d/synth-tiny/ucfTrainTestlist/classInd.txt").is_file()
    assert list((tmp_path / "c/frames").iterdir()) and list((tmp_path / "c/features").glob("*.npz"))


def test_a_live_run_has_one_writer(shared, tmp_path):
    "Item 7: while a run trains, a second command on it is refused, with --resume or --overwrite too; once its process is killed, the run reads as interrupted."
    models = tmp_path / "models"
    run = models / "tiny" / "gru-split1-seed0"
    p = start_cli(["train", TINY, *LONG_GRU, *tiny_paths(shared, models)])
    try:
        wait_for_epochs(run, p, 1)
        for flag in ([], ["--resume"], ["--overwrite"]):
            r = run_cli(["train", TINY, *LONG_GRU, *flag, *tiny_paths(shared, models)])
            _one_line_error(r, 1, f"process {p.pid}")
            assert p.poll() is None and (run / "checkpoint.pth").is_file() and (run / "config.yaml").is_file()
    finally:
        p.kill()
        p.wait()
    assert read_json(run / "status.json")["state"] == "running"  # what the killed process last wrote
    r = run_cli(["train", TINY, *LONG_GRU, *tiny_paths(shared, models)])
    _one_line_error(r, 2, "interrupted: its process is gone", "--resume")


def test_unwritable_outputs_name_the_path(shared, tmp_path):
    "Item 11: a models folder, cache or features folder, or executed-notebook folder that cannot be written."
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for key in ("models_dir", "cache.root", "features.cache_dir"):
        args = [*tiny_paths(shared, tmp_path / "models"), "--set", f"{key}={blocker}/sub"]
        r = run_cli(["train", TINY, "--model", "mean", *args])
        _one_line_error(r, 1, key, f"{blocker}/sub")
    args = ["run", TINY, *tiny_paths(shared, tmp_path / "models")]
    _one_line_error(run_cli([*args, "--output-dir", "/proc/esn-video-runs"]), 1, "/proc/esn-video-runs")
    r = run_cli(args, env=cli_env(ESN_VIDEO_RUNS=f"{blocker}/runs"))
    _one_line_error(r, 1, f"{blocker}/runs")


def test_damaged_records_are_named(shared, tmp_path):
    "Item 13: a truncated best.pth or a malformed metrics.json, for evaluate and compare."
    models = tmp_path / "models"
    run = _finished_mean(shared, models)
    best = (run / "best.pth").read_bytes()
    (run / "best.pth").write_bytes(best[:200])
    _one_line_error(run_cli(["evaluate", str(run)]), 1, "best.pth", "--overwrite")
    (run / "best.pth").write_bytes(best)
    (run / "metrics.json").write_text('{"accuracy": 0.5, "model"')
    _one_line_error(run_cli(["evaluate", str(run)]), 1, "metrics.json")
    r = run_cli(["compare", TINY, "--models", "mean", *tiny_paths(shared, models)])
    _one_line_error(r, 1, "mean-split1-seed0/metrics.json")
    _one_line_error(run_cli(["evaluate", str(run), "--test-clips", "0"]), 2, "--test-clips")


def test_ctrl_c_is_one_line_and_the_run_resumes(shared, tmp_path):
    "Item 14: Ctrl-C ends in one line saying how to resume; the run is marked interrupted and resumes."
    models = tmp_path / "models"
    run = models / "tiny" / "gru-split1-seed0"
    args = ["train", TINY, *LONG_GRU, "--set", "training.epochs=30", *tiny_paths(shared, models)]
    p = start_cli(args)
    wait_for_epochs(run, p, 2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err[-3000:]
    assert "Traceback" not in err and "interrupted" in err and "--resume" in err, err[-3000:]
    assert read_json(run / "status.json")["state"] == "interrupted"
    r = run_cli([*args, "--resume"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = read_json(run / "metrics.json")
    assert rec["resumed_from_epoch"] >= 2 and rec["epochs_run"] == 30


def test_smaller_things(shared, tmp_path):
    "Item 15: --quiet prints only the result; duplicate YAML keys and a tracking URI with a password are refused; skipped training videos are recorded."
    models = tmp_path / "models"
    r = run_cli(["train", TINY, "--model", "gru", *tiny_paths(shared, models), "--quiet"])
    assert r.returncode == 0 and len(r.stdout.strip().splitlines()) == 1, r.stdout
    dup = tmp_path / "dup.yaml"
    dup.write_text(Path(TINY).read_text() + "training: {epochs: 1}\n")
    _one_line_error(run_cli(["train", str(dup), "--model", "mean"]), 2, "'training' is given twice", str(dup))
    over = "mlflow.tracking_uri=https://bob:secret-pw@mlflow.example.org"
    err = _one_line_error(run_cli(["train", TINY, "--model", "mean", "--set", over]), 2, "mlflow.tracking_uri")
    assert "secret-pw" not in err
    # a training video that cannot be decoded is left out, and the run's record says which and why
    data = tmp_path / "data"
    run_cli(["data", "synth", str(data), "--preset", "tiny", "--workers", "1", "--no-progress"])
    victim = sorted((data / "UCF-101").rglob("*.avi"))[0]
    victim.write_bytes(b"not a video")
    args = [*tiny_paths(tmp_path, models / "skip"), "--set", f"dataset.root={data}", "--set",
            "dataset.synth={n_classes: 4, n_groups: 5, clips_per_group: 1, n_frames: 16, size: [32, 24]}"]  # fmt: skip
    r = run_cli(["train", TINY, "--model", "mean", *args, "--quiet"])
    assert r.returncode == 0, r.stderr[-3000:]
    rec = read_json(models / "skip/tiny/mean-split1-seed0/metrics.json")
    rel = f"{victim.parent.name}/{victim.name}"
    assert any(rel in part for part in rec["skipped_videos"].values()), rec["skipped_videos"]
