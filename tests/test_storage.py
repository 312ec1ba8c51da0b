"""Azure Blob storage on a real Azurite: transfers cut off by an outage and resumed, blobs whose content does not match
their MD5, wrong credentials, missing containers and bad locations on the command line, a dataset read from Blob and
the frame and feature caches shared by a second "machine" (fresh folders) instead of decoded again.

Every dataset tree here is real encoded video, written by `esn-video data synth --preset tiny`.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cli_helpers import ROOT, TINY, cli_env, run_cli

from esn_video.cloud.azurite import Azurite
from esn_video.cloud.storage import (
    CONNECTION_ENV,
    TransferError,
    create_containers,
    download_tree,
    fetch_dataset,
    file_md5,
    list_blobs,
    local_files,
    parse_location,
    storage_target,
    upload_tree,
)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    "A tiny generated dataset in UCF101's layout: real encoded .avi files and split lists."
    d = tmp_path_factory.mktemp("synth") / "tiny"
    r = run_cli(["data", "synth", str(d), "--preset", "tiny"])
    assert r.returncode == 0, r.stderr
    return d


@pytest.fixture
def target(azurite):
    t = storage_target(env={CONNECTION_ENV: azurite.connection_string})
    create_containers(t, log=None)
    return t


def _consistent(loc, target, src: Path) -> dict:
    "Every blob visible under `loc` is a complete copy of its local file (size and MD5); the blobs by path."
    blobs = {b.rel: b for b in list_blobs(loc, target)}
    for rel, b in blobs.items():
        assert b.md5 == file_md5(src / rel) and b.size == (src / rel).stat().st_size, rel
    return blobs


def _cut_off(az: Azurite, after: int, how: str):
    "An `on_file` callback that stops (or kills) the emulator once `after` files were sent."
    sent, lock = [], threading.Lock()

    def on_file(rel: str, status: str) -> None:
        with lock:
            if status == "sent":
                sent.append(rel)
            if len(sent) == after and az.running:
                getattr(az, how)()

    return on_file


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_upload_cut_off_then_resumed(videos, azurite, target, how):
    "The service goes away mid-upload: bounded retries, an error naming every file not sent; after a restart the same upload sends only those."
    loc = parse_location("az://ucf101-dataset/tiny")
    files = local_files(videos)
    assert len(files) >= 25
    azurite.stop()  # Azurite saves its state every few seconds: a clean restart makes the containers last a kill
    azurite.start()
    with pytest.raises(TransferError) as ei:
        upload_tree(videos, loc, target, workers=2, retries=3, backoff=0.1, block_size=2048,
                    on_file=_cut_off(azurite, 6, how), log=None)  # fmt: skip
    rep, msg = ei.value.report, str(ei.value)
    assert rep.failed and len(rep.transferred) >= 6 and len(rep.transferred) + len(rep.failed) == len(files)
    assert f"{len(rep.failed)} of {len(files)} files were not uploaded" in msg and "run the same upload again" in msg
    for rel in sorted(rep.failed)[:20]:
        assert rel in msg  # named exactly
    azurite.start()
    there = _consistent(loc, target, videos)  # no partly sent file is visible as a blob
    assert set(there) <= set(rep.transferred)
    if how == "stop":
        assert set(there) == set(rep.transferred)  # a clean stop keeps what was committed
    again = upload_tree(videos, loc, target, workers=4, block_size=2048, log=None)
    assert sorted(again.skipped) == sorted(there)  # finished files are not sent again
    assert sorted(again.transferred) == sorted(set(files) - set(there))
    assert not again.failed
    _consistent(loc, target, videos)
    assert len(list_blobs(loc, target)) == len(files)


def test_staged_blocks_are_not_a_blob(videos, target):
    "A file cut off after some of its blocks were sent leaves no blob (its blocks are uncommitted); the next upload finishes it."
    loc = parse_location("az://ucf101-dataset/staged")
    rel = sorted(r for r in local_files(videos) if r.endswith(".avi"))[0]
    data = (videos / rel).read_bytes()
    bc = target.container(loc.container).get_blob_client(loc.blob(rel))
    for i, start in enumerate(range(0, 4096, 2048)):  # two of its blocks arrived, then the sender died
        bc.stage_block(base64.b64encode(f"block-{i:08d}".encode()).decode(), data[start : start + 2048])
    assert len(bc.get_block_list("uncommitted")[1]) == 2
    assert list_blobs(loc, target) == [] and not bc.exists()
    rep = upload_tree(videos, loc, target, block_size=2048, only=[rel], log=None)
    assert rep.transferred == [rel]
    assert bc.download_blob().readall() == data and list_blobs(loc, target)[0].md5 == file_md5(videos / rel)


def test_corrupt_shared_frame_cache_is_not_taken(videos, target, tmp_path):
    "A frame cache in Blob with one damaged file (or no marker) is not pulled: the machine decodes locally, nothing half-made is left."
    from azure.storage.blob import ContentSettings

    from esn_video.cloud.caches import frame_cache_location, pull_frame_cache, push_frame_cache
    from esn_video.data.cache import build_frame_cache, cache_params

    quiet = lambda *a: None  # noqa: E731
    a = build_frame_cache(videos, tmp_path / "a" / "32x24_x", size=(32, 24), workers=1, progress=False, log=quiet)
    loc = frame_cache_location(target, "fp", a.path)
    assert push_frame_cache(a.path, loc, target, log=None) == "pushed"
    npy = next(b.rel for b in list_blobs(loc, target) if b.rel.endswith(".npy"))
    bc = target.container(loc.container).get_blob_client(loc.blob(npy))
    bc.set_http_headers(content_settings=ContentSettings(content_md5=bytearray(b"\x01" * 16)))
    said = []
    dest = tmp_path / "b" / a.path.name
    assert not pull_frame_cache(dest, loc, target, cache_params(None, (32, 24))["hash"], log=said.append)
    assert "could not pull the frame cache" in said[-1] and npy in said[-1]
    assert not (dest / "params.json").exists() and not list((tmp_path / "b").glob(".*pull*"))
    b = build_frame_cache(videos, dest, size=(32, 24), workers=1, progress=False, log=quiet)
    assert b.report["decoded"] == len(a)  # decoded here, from the videos


def test_download_refuses_blob_that_does_not_match_its_md5(videos, target, tmp_path):
    "A blob whose bytes do not match its Content-MD5 is refused and fetched again, never used; the local copy stays."
    from azure.storage.blob import ContentSettings

    loc = parse_location("az://ucf101-dataset/md5")
    upload_tree(videos, loc, target, log=None)
    rel = sorted(r for r in local_files(videos) if r.endswith(".avi"))[3]
    bc = target.container(loc.container).get_blob_client(loc.blob(rel))
    good = bc.get_blob_properties().content_settings
    wrong = ContentSettings(content_type=good.content_type, content_md5=bytearray(b"\x00" * 16))
    bc.set_http_headers(content_settings=wrong)  # the stored MD5 no longer matches the content

    out = tmp_path / "out"
    (out / Path(rel).parent).mkdir(parents=True)
    (out / rel).write_bytes(b"the copy that was here before")
    said = []
    with pytest.raises(TransferError) as ei:
        download_tree(loc, out, target, retries=2, backoff=0.05, log=said.append)
    assert list(ei.value.report.failed) == [rel] and "does not match its MD5" in str(ei.value) and rel in str(ei.value)
    assert ei.value.report.refetched == [rel, rel]  # refused, fetched again, refused again
    assert sum("fetching it again" in s for s in said) == 2
    assert (out / rel).read_bytes() == b"the copy that was here before"  # never replaced by the bad bytes
    assert not [p for p in out.rglob("*.part")]  # no temporary file left
    for r in local_files(videos):
        if r != rel:
            assert (out / r).read_bytes() == (videos / r).read_bytes()

    def heal(line: str) -> None:  # the damage goes away after the first refusal (as a repaired blob would)
        said.append(line)
        if "fetching it again" in line:
            bc.set_http_headers(content_settings=good)

    bc.set_http_headers(content_settings=wrong)
    rep = download_tree(loc, out, target, retries=3, backoff=0.05, log=heal)
    assert rep.refetched == [rel] and rep.transferred == [rel] and not rep.failed
    assert (out / rel).read_bytes() == (videos / rel).read_bytes()

    (out / rel).write_bytes(b"damaged on disk")  # a local file that no longer matches is fetched again
    rep = download_tree(loc, out, target, log=None)
    assert rep.transferred == [rel] and (out / rel).read_bytes() == (videos / rel).read_bytes()


def test_blob_dataset_is_fetched_once(videos, target, tmp_path, monkeypatch):
    "`dataset.root: az://...` is fetched into the data folder (ESN_VIDEO_DATA), verified; a second fetch downloads nothing."
    monkeypatch.setenv("ESN_VIDEO_DATA", str(tmp_path / "data"))
    upload_tree(videos, "az://ucf101-dataset/UCF101", target, log=None)
    root = fetch_dataset("az://ucf101-dataset/UCF101", target, log=None)
    assert root == tmp_path / "data" / "blob" / "ucf101-dataset" / "UCF101"
    for rel, p in local_files(videos).items():
        assert (root / rel).read_bytes() == p.read_bytes()
        assert (root / rel).stat().st_mtime_ns == p.stat().st_mtime_ns
    said = []
    fetch_dataset("az://ucf101-dataset/UCF101", target, log=said.append)
    assert said == [
        f"dataset az://ucf101-dataset/UCF101: 0 files fetched, {len(local_files(videos))} already in {root}"
    ]


def _cli(args: list[str], conn: str, **extra) -> subprocess.CompletedProcess:
    return run_cli(["storage", *args], env=cli_env(**{CONNECTION_ENV: conn}, **extra), timeout=120)


def test_cli_roundtrip(videos, azurite, tmp_path):
    "create, upload, ls, download through the command line."
    conn = azurite.connection_string
    r = _cli(["create"], conn)
    assert r.returncode == 0 and "3 containers created" in r.stdout, r.stderr
    r = _cli(["upload", str(videos), "az://ucf101-dataset/UCF101"], conn)
    n = len(local_files(videos))
    assert r.returncode == 0 and f"{n} sent, 0 already there, 0 failed" in r.stdout, r.stdout + r.stderr
    r = _cli(["upload", str(videos), "az://ucf101-dataset/UCF101"], conn)
    assert f"0 sent, {n} already there" in r.stdout
    r = _cli(["ls", "az://ucf101-dataset/UCF101"], conn)
    assert r.returncode == 0 and f"{n} blobs" in r.stdout and "UCF-101/" in r.stdout
    r = _cli(["ls"], conn)
    assert r.stdout.split() == ["experiment-artifacts", "processed-data", "ucf101-dataset"]
    r = _cli(["download", "az://ucf101-dataset/UCF101", str(tmp_path / "copy")], conn)
    assert r.returncode == 0, r.stderr
    for rel, p in local_files(videos).items():
        assert (tmp_path / "copy" / rel).read_bytes() == p.read_bytes()
    assert azurite.key not in r.stdout + r.stderr


def test_cli_bad_input(videos, azurite, tmp_path):
    "Wrong credentials, a missing container, a bad location, no target: one line each, exit 2, nothing local deleted."
    conn = azurite.connection_string
    assert _cli(["create"], conn).returncode == 0
    keep = tmp_path / "keep"
    keep.mkdir()
    (keep / "mine.txt").write_text("mine")
    wrong_key = base64.b64encode(os.urandom(64)).decode()
    wrong = conn.replace(azurite.key, wrong_key)
    cases = [
        (["ls", "az://ucf101-dataset"], wrong, "refused the credentials"),
        (["download", "az://ucf101-dataset/x", str(keep)], wrong, "refused the credentials"),
        (["upload", str(videos), "az://no-such-container/x"], conn, "container 'no-such-container' does not exist"),
        (["download", "az://no-such-container/x", str(keep)], conn, "esn-video storage create"),
        (["download", "az://Bad_Name/x", str(keep)], conn, "is not a valid container name"),
        (["upload", str(videos), "/tmp/not-a-blob"], conn, "is not a blob location"),
        (["download", "az://ucf101-dataset/a/../b", str(keep)], conn, "no '.' or '..'"),
        (["download", "az://ucf101-dataset/nothing-here", str(keep)], conn, "holds no blobs"),
        (["upload", str(tmp_path / "absent"), "az://ucf101-dataset/x"], conn, "is not a folder"),
        (["ls"], "AccountName=;", "not a storage connection string"),
    ]
    for args, c, says in cases:
        r = _cli(args, c)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert len(lines) == 1 and says in lines[0], (args, r.stderr)
        assert azurite.key not in r.stderr and wrong_key not in r.stderr
        assert (keep / "mine.txt").read_text() == "mine" and sorted(os.listdir(keep)) in (["mine.txt"],
                                                                                            [".esn-video-blobs.json", "mine.txt"])  # fmt: skip
    assert list_blobs("az://ucf101-dataset", storage_target(env={CONNECTION_ENV: conn})) == []
    r = run_cli(["storage", "ls"], env=cli_env())  # no target at all
    assert r.returncode == 2 and "no storage target" in r.stderr
    azurite.stop()  # the service is down: a failure (1), said in one line
    r = _cli(["ls", "az://ucf101-dataset"], conn)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "could not be reached" in r.stderr


def test_cli_no_azure_credential():
    "An account to reach with DefaultAzureCredential but no way to sign in (no identity, no service principal, no az login): one line, exit 2."
    env = {k: v for k, v in cli_env().items() if not k.startswith("AZURE_")}
    r = run_cli(
        ["storage", "ls", "az://ucf101-dataset"], env={**env, "ESN_VIDEO_STORAGE_ACCOUNT": "labstore"}, timeout=120
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "no Azure credential for storage account labstore" in r.stderr and "managed identity" in r.stderr


def _train(conn: str, home: Path, model: str = "mean") -> subprocess.CompletedProcess:
    "Train one model of the tiny config on the dataset in Blob, with the caches shared, in `home` as a machine of its own."
    env = cli_env(**{CONNECTION_ENV: conn, "ESN_VIDEO_DATA": str(home / "data"), "ESN_VIDEO_CACHE": str(home / "cache"),
                     "ESN_VIDEO_MODELS": str(home / "models")})  # fmt: skip
    sets = ["dataset.kind=ucf101", "dataset.root=az://ucf101-dataset/UCF101", "dataset.synth={}", "storage.caches=both"]
    args = ["train", TINY, "--model", model] + [x for s in sets for x in ("--set", s)]
    return run_cli(args, env=env, timeout=600)


def test_second_machine_downloads_the_caches(videos, azurite, target, tmp_path):
    "Machine A fetches the dataset from Blob and pushes its frame and feature caches; machine B (empty folders) pulls them: nothing decoded or encoded, the same result."
    upload_tree(videos, "az://ucf101-dataset/UCF101", target, log=None)
    a, b = tmp_path / "a", tmp_path / "b"
    r = _train(azurite.connection_string, a)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "no complete frame cache at az://processed-data/frames/" in r.stdout and "frame cache pushed" in r.stdout
    assert "features pushed to az://processed-data/features/" in r.stdout
    assert "extracted" in r.stdout and ": 0 videos to decode" not in r.stdout  # A decoded and encoded
    blobs = [x.rel for x in list_blobs("az://processed-data", target)]
    assert sum(x.endswith("COMPLETE.json") for x in blobs) == 2 and any(x.endswith(".npy") for x in blobs)

    r2 = _train(azurite.connection_string, a, "gru")  # the same machine again: the dataset is not downloaded again
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert "dataset az://ucf101-dataset/UCF101: 0 files fetched" in r2.stdout

    r = _train(azurite.connection_string, b)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "frame cache pulled from az://processed-data/frames/" in r.stdout and "features pulled from" in r.stdout
    assert "videos to decode" in r.stdout and ": 0 videos to decode" in r.stdout  # nothing decoded on B
    assert "extracted" not in r.stdout  # every feature view loaded, none encoded
    fa = sorted(p.name for p in (a / "cache" / "features").glob("features-*.npz"))
    fb = sorted(p.name for p in (b / "cache" / "features").glob("features-*.npz"))
    assert fa == fb and fa
    ma = json.loads(next((a / "models").rglob("metrics.json")).read_text())
    mb = json.loads(next((b / "models").rglob("metrics.json")).read_text())
    assert (ma["accuracy"], ma["macro_f1"]) == (mb["accuracy"], mb["macro_f1"])


def test_bench_storage_runs(tmp_path):
    "The storage benchmark runs end to end at a tiny size and prints its ratios (the figures are not asserted)."
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_storage.py"), "--preset", "tiny", "--epochs", "1",
                        "--repeats", "1", "--latency-ms", "5", "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                       env=cli_env())  # fmt: skip
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    out = json.loads((tmp_path / "b.json").read_text())
    assert out["upload"]["parallel_speedup"] > 0 and out["training"]["blob_vs_local"] > 0
    far = out["upload"]["with_latency"]  # the proxy's round trip is really paid: the loop waits >= 5 ms more per file
    assert far["latency_ms"] == 5 and far["sequential_s"] - out["upload"]["sequential_s"] >= 0.005 * far["files"]
    assert "parallel upload" in r.stdout and "clips/s" in r.stdout
    shutil.rmtree(tmp_path, ignore_errors=True)
