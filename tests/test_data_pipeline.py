"""The whole data pipeline on small generated trees: synth tree -> index -> frame cache -> clip datasets -> loaders.

Covers the cases that cross chapters: damaged videos, a build killed with SIGKILL and resumed, stale parameters,
broken split files, that the temporal augmentations keep the label, that the fused augmentation (one colour matrix,
one crop/resize/flip) matches torchvision's functional ops on cached frames, and that batches handed over by worker
processes through the loader's shared slots equal those built in the main process. And what a careless user does:
a generated dataset asked into a real, half-downloaded UCF101; two builds of one folder at once; `kill -9` of a
command with worker processes; outputs that cannot be written, or a disk that fills up; every video broken; a
video listed but missing; a video replaced after its features were cached.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from esn_video.core import seed_everything
from esn_video.data.cache import FrameCache, StaleCacheError, build_frame_cache, cache_params
from esn_video.data.decode import decode_video
from esn_video.data.loaders import ClipDataset, ClipSpec, VideoSource, clip_dataloaders, eval_dataloader, sample_indices
from esn_video.data.synth import make_synth_dataset, motion_features, write_split_files
from esn_video.data.ucf101 import SplitFileError, ucf101_index

CLI = str(Path(sys.executable).parent / "esn-video")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    "A small tree written through the command line, with three damaged videos."
    root = tmp_path_factory.mktemp("data") / "synth"
    r = subprocess.run(
        [CLI, "data", "synth", str(root), "--preset", "small", "--workers", "2"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return root


@pytest.fixture(scope="module")
def damaged(tree) -> list[Path]:
    idx = ucf101_index(tree)
    bad = [idx.train[1].path, idx.train[7].path, idx.test[2].path]
    data = bad[1].read_bytes()
    bad[0].write_bytes(b"")  # empty
    bad[1].write_bytes(data[: len(data) * 7 // 10])  # truncated
    bad[2].write_bytes(os.urandom(len(data)))  # garbage
    return bad


@pytest.fixture(scope="module")
def cache(tree, damaged, tmp_path_factory) -> FrameCache:
    out = tmp_path_factory.mktemp("cache") / "c"
    r = subprocess.run(
        [CLI, "data", "cache", str(tree), "--out", str(out), "--size", "32x24", "--workers", "2", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    for p in damaged:  # the report names every damaged video
        assert f"skipped {p}" in r.stdout, r.stdout
    return FrameCache(out, expect=cache_params(None, (32, 24)))


def test_index_matches_tree(tree):
    idx = ucf101_index(tree, split=2, val_fraction=0.25, seed=3)
    assert len(idx.classes) == 12
    everything = idx.train + idx.valid + idx.test
    assert len(everything) == len(list((tree / "UCF-101").rglob("*.avi"))) == 12 * 8 * 3
    assert {r.group for r in idx.test} == {3, 4}
    assert not {r.group for r in idx.train} & {r.group for r in idx.valid}
    assert idx.valid == ucf101_index(tree, split=2, val_fraction=0.25, seed=3).valid


def test_bad_split_file_names_it(tree, tmp_path):
    import shutil

    copy = tmp_path / "t"
    shutil.copytree(tree / "ucfTrainTestlist", copy / "ucfTrainTestlist")
    (copy / "UCF-101").symlink_to(tree / "UCF-101")
    f = copy / "ucfTrainTestlist/trainlist01.txt"
    lines = f.read_bytes().splitlines()
    f.write_bytes(b"\r\n".join(lines[:3] + [b"MoveUp/v_MoveUp_g05_c01.avi 99"] + lines[3:]))
    with pytest.raises(SplitFileError, match=r"trainlist01.txt, line 4: label '99'"):
        ucf101_index(copy)
    f.write_bytes(b"\r\n".join(lines))
    ucf101_index(copy)  # repaired
    (copy / "ucfTrainTestlist/testlist01.txt").unlink()
    with pytest.raises(SplitFileError, match="testlist01.txt is missing"):
        ucf101_index(copy)


def test_cache_skips_damaged_and_holds_the_rest(tree, damaged, cache):
    idx = ucf101_index(tree)
    n_all = len(idx.train) + len(idx.valid) + len(idx.test)
    assert len(cache) == n_all - 3
    assert sorted(cache.skipped) == sorted(f"{p.parent.name}/{p.name}" for p in damaged)
    good = idx.valid[0]
    assert np.array_equal(np.asarray(cache.frames(good)), decode_video(good.path, size=(32, 24))[0])


def test_stale_parameters_never_hit(tree, cache):
    with pytest.raises(StaleCacheError, match="fps: cached None, asked 8.0"):
        build_frame_cache(tree, cache.path, fps=8, size=(32, 24), progress=False)
    with pytest.raises(StaleCacheError, match="size"):
        FrameCache(cache.path, expect=cache_params(None, (64, 48)))
    r = subprocess.run(
        [CLI, "data", "cache", str(tree), "--out", str(cache.path), "--size", "64x48", "--no-progress"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2 and "other parameters" in r.stderr and str(cache.path) in r.stderr


@pytest.fixture(scope="module")
def big_tree(tmp_path_factory) -> Path:
    "80 videos of 60 frames at 160x120."
    root = tmp_path_factory.mktemp("big") / "k"
    return make_synth_dataset(
        root, n_classes=4, n_groups=5, clips_per_group=4, n_frames=60, size=(160, 120), progress=False
    )


@pytest.fixture(scope="module")
def many_tree(big_tree, tmp_path_factory) -> Path:
    "The 80 videos of `big_tree` ten times over (hard links under 800 names): a cache build of several seconds."
    root = tmp_path_factory.mktemp("many") / "m"
    videos = []
    for src in sorted((big_tree / "UCF-101").rglob("*.avi")):
        cls, rest = src.parent.name, src.stem.split("_g")[1]
        g, c = int(rest[:2]), int(rest.split("_c")[1])
        for k in range(10):
            dst = root / "UCF-101" / cls / f"v_{cls}_g{g:02d}_c{c + 4 * k:02d}.avi"
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.link(src, dst)
            videos.append((cls, g, c + 4 * k))
    write_split_files(root, sorted({v[0] for v in videos}), videos, 5)
    return root


def test_killed_build_resumes(big_tree, tmp_path):
    root = big_tree
    out = tmp_path / "kc"
    cmd = [CLI, "data", "cache", str(root), "--out", str(out), "--size", "src", "--workers", "2", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    mf, t0 = out / "manifest.jsonl", time.time()
    while time.time() - t0 < 60 and (not mf.exists() or len(mf.read_text().splitlines()) < 6):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)  # the command and its worker processes, mid-build
    proc.wait()
    done = {json.loads(ln)["key"] for ln in mf.read_text().splitlines() if ln.endswith("}")}
    assert 6 <= len(done) < 80, len(done)
    for k in done:  # every recorded entry is whole and loads
        assert np.load(out / "frames" / k.replace(".avi", ".npy"), mmap_mode="r").shape == (60, 120, 160, 3)
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert f"({len(done)} already done)" in r.stdout, r.stdout
    c = FrameCache(out)
    assert len(c) == 80 and not list(out.rglob(".*.tmp"))
    v = next(iter(sorted(done)))
    assert np.array_equal(np.asarray(c.frames(root / "UCF-101" / v)), decode_video(root / "UCF-101" / v)[0])


def test_datasets_leave_out_skipped_and_agree(tree, damaged, cache):
    idx = ucf101_index(tree)
    spec = ClipSpec(n_frames=8, stride=2, size=(32, 24))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = ClipDataset(idx.train, cache, spec, train=False)
    assert len(ds) == len(idx.train) - 2 and len(caught) == 1
    direct = ClipDataset(ds.records, VideoSource(size=(32, 24)), spec, train=False)
    for i in (0, 5, len(ds) - 1):
        assert torch.equal(ds[i][0], direct[i][0]) and ds[i][1] == direct[i][1]


def test_loaders_end_to_end(tree, cache):
    seed_everything(0)
    idx = ucf101_index(tree)
    spec = ClipSpec(n_frames=8, stride=2, size=(28, 20), strides=(1, 2, 3), jitter=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = clip_dataloaders(idx, cache, spec, bs=6, num_workers=2, device="cpu", seed=0)
        test_dl = eval_dataloader(idx.test, cache, replace(spec, n_clips=3), bs=5, device="cpu")
    xb, yb = next(iter(dls.train))
    assert xb.shape == (6, 8, 3, 20, 28) and xb.dtype == torch.float32 and yb.dtype == torch.int64
    assert abs(float(xb.mean())) < 3  # normalised
    n = sum(len(b[1]) for b in dls.valid)
    assert n == len(dls.valid.dataset)
    tb = next(iter(test_dl))
    assert tb[0].shape == (5, 8, 3, 20, 28)  # one item per (clip, video)
    assert len(test_dl.dataset) == 3 * len(test_dl.dataset.records)
    a, b = next(iter(test_dl)), next(iter(test_dl))
    assert torch.equal(a[0], b[0])  # evaluation is deterministic


def test_temporal_augmentation_keeps_labels(tree, cache):
    """A classifier of order-aware features trained on clips sampled WITH a temporal augmentation (random
    stride/speed, jitter, TSN segments) and the original labels, tested on clean clips: if the augmentation changed
    classes, its training labels would contradict each other and test accuracy would fall. The control (clips
    reversed in time half of the time, which swaps each class with its twin) shows that it does fall then."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    idx = ucf101_index(tree, val_fraction=0)
    train = [r for r in idx.train if r in cache]
    test = [r for r in idx.test if r in cache]
    y_train = np.array([r.label for r in train] * 2)
    y_test = np.array([r.label for r in test])

    def feats(records, spec, train_mode, reverse_p=0.0, seed=0, draws=1):
        rng = np.random.default_rng(seed)
        out = []
        for _ in range(draws):
            for r in records:
                i = sample_indices(cache.n_frames(r), spec, train_mode, rng)
                if rng.random() < reverse_p:
                    i = i[::-1]
                out.append(motion_features(cache.read(r, i))[1])
        return np.array(out)

    def accuracy(spec, reverse_p=0.0):
        with threadpool_limits(1):  # BLAS threads only contend on a small, busy machine
            clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=500))
            clf.fit(feats(train, spec, True, reverse_p, draws=2), y_train)
        return float((clf.predict(feats(test, spec, False)) == y_test).mean())

    acc = {
        "none": accuracy(ClipSpec(16, stride=1)),
        "speed (strides 1-3)": accuracy(ClipSpec(12, stride=2, strides=(1, 2, 3))),
        "jitter": accuracy(ClipSpec(16, stride=1, jitter=2)),
        "segments": accuracy(ClipSpec(12, mode="segments")),
        "reversal (control)": accuracy(ClipSpec(16, stride=1), reverse_p=0.5),
    }
    print(acc)
    assert acc["none"] >= 0.6, acc
    for k in ("speed (strides 1-3)", "jitter", "segments"):
        assert acc[k] >= acc["none"] - 0.15, acc
        assert acc[k] >= acc["reversal (control)"] + 0.15, acc


def _cached_clips(tree, cache, n=6):
    "uint8 clips (T, 3, H, W) straight from the cache, in its channels-last layout."
    idx = ucf101_index(tree)
    recs = [r for r in idx.train if r in cache][:n]
    return [torch.from_numpy(np.array(cache.frames(r)[:12])).permute(0, 3, 1, 2) for r in recs]


def test_fused_colour_matrix_matches_torchvision(tree, cache):
    "One colour matrix per clip == torchvision.transforms.v2's brightness, contrast, saturation (that order) on a video."
    from torchvision import tv_tensors
    from torchvision.transforms.v2 import functional as F

    from esn_video.data.transforms import jitter_colour

    g = torch.Generator().manual_seed(0)
    for clip in _cached_clips(tree, cache):
        b, c, s = (0.75 + 0.5 * torch.rand(3, generator=g)).tolist()
        ref = F.adjust_saturation(F.adjust_contrast(F.adjust_brightness(tv_tensors.Video(clip), b), c), s)
        d = (jitter_colour(clip, b, c, s).int() - ref.as_subclass(torch.Tensor).int()).abs().float()
        # torchvision rounds down after each step, and clamps between steps (a few saturated pixels)
        assert d.mean() <= 2 and d.quantile(0.99) <= 3, (b, c, s, d.mean(), d.max())


def test_augment_matches_reference_crop_flip(tree, cache):
    "ClipAugment's crop + resize + flip (+ colour) == torchvision's resized_crop and horizontal_flip with the same box."
    from torchvision.transforms.v2 import functional as F

    from esn_video.data.transforms import ClipAugment, jitter_colour

    plain = ClipAugment((28, 20), brightness=0, contrast=0, saturation=0)
    full = ClipAugment((28, 20))
    for k, clip in enumerate(_cached_clips(tree, cache)):
        torch.manual_seed(k)
        p = full.params(*clip.shape[-2:])
        assert 0 <= p.top and p.top + p.height <= 24 and 0 <= p.left and p.left + p.width <= 32
        ref = F.resized_crop(clip.contiguous(), p.top, p.left, p.height, p.width, [20, 28], antialias=True)
        ref = F.horizontal_flip(ref) if p.flip else ref
        assert (plain.apply(clip, p).int() - ref.int()).abs().max() <= 1
        want = jitter_colour(ref, p.brightness, p.contrast, p.saturation, p.hue)
        assert (full.apply(clip, p).int() - want.int()).abs().max() <= 2
        out = full(clip)  # drawn once per clip: identical frames stay identical
        same = full(clip[:1].expand(5, -1, -1, -1))
        assert out.shape == (12, 3, 20, 28) and torch.equal(same, same[:1].expand_as(same))


def test_worker_batches_equal_in_process(tree, cache):
    "Batches handed over through the loader's shared slots == batches built in the main process, and are the caller's."
    from esn_video.data.loaders import ClipLoader

    idx = ucf101_index(tree)
    spec = ClipSpec(n_frames=8, stride=2, size=(32, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = ClipDataset(idx.train, cache, spec, train=False)
    ref = [(x.clone(), y.clone()) for x, y in ClipLoader(ds, 4, num_workers=0)]
    dl = ClipLoader(ds, 4, num_workers=2)
    for _epoch in range(2):  # persistent workers: the same slots in both epochs
        got = list(dl)
        assert len(got) == len(ref)
        for (x, y), (rx, ry) in zip(got, ref):
            assert torch.equal(x, rx) and torch.equal(y, ry)
    # the second epoch found every slot held by the first epoch's batches (still in `got`): all came through torch
    assert dl._tasks.n_slots == 7 and dl.dataset.slots is not None
    slots = dl._tasks.slots
    del got, x, y
    for _epoch in range(2):  # batches dropped as they come: the same slots cycle, epoch after epoch
        missed = slots.missed
        for k, (x, _y) in enumerate(dl):
            assert torch.equal(x, ref[k][0])
        assert dl._tasks.slots is slots and slots.missed == missed
    it = iter(dl)  # an epoch left after two batches, with batches still in flight in the workers' slots
    next(it), next(it)
    del it, x
    for k, (x, _y) in enumerate(dl):  # the next epoch waits for them, then reuses their slots
        assert torch.equal(x, ref[k][0])
    assert dl._tasks.slots is slots and slots.missed == missed
    # augmented training batches: the same seed gives the same batches through the slots
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train = ClipDataset(idx.train, cache, spec, train=True)

    def first(seed):
        seed_everything(seed)
        return next(iter(ClipLoader(train, 4, shuffle=True, num_workers=2, seed=seed, persistent_workers=False)))

    a, b = first(3), first(3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


# --- what a careless user does ---------------------------------------------------------------------------------------


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *args], capture_output=True, text=True, **kw)


def _half_downloaded_ucf101(root: Path) -> list[Path]:
    "A real UCF101 being extracted: class folders with videos, no split lists yet."
    from esn_video.data.synth import group_look, render_clip, write_video

    files = []
    for cls in ("ApplyEyeMakeup", "Basketball"):
        f = root / "UCF-101" / cls / f"v_{cls}_g01_c01.avi"
        f.parent.mkdir(parents=True)
        files.append(
            write_video(
                f, render_clip("rise", False, group_look(0, 1, (32, 24)), 8, (32, 24), np.random.default_rng(0))
            )
        )
    return files


def test_synth_never_deletes_what_it_did_not_write(tmp_path):
    "A real, half-downloaded UCF101 is refused by the generator (also with --overwrite) and keeps every file."
    real = tmp_path / "UCF101"
    files = _half_downloaded_ucf101(real)
    content = {f: f.read_bytes() for f in files}
    with pytest.raises(FileExistsError, match="did not write"):
        make_synth_dataset(real, n_classes=4, n_groups=5, clips_per_group=1, n_frames=16, size=(32, 24),
                           progress=False, overwrite=True)  # fmt: skip
    r = _run("data", "synth", str(real), "--preset", "tiny", "--overwrite")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert str(real) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert {f: f.read_bytes() for f in files} == content
    assert sorted(p.relative_to(real).as_posix() for p in real.rglob("*") if p.is_file()) == sorted(
        f.relative_to(real).as_posix() for f in files
    )
    from esn_video.data.synth import NotOurDatasetError, ensure_synth_dataset

    with pytest.raises(NotOurDatasetError, match=str(real)):
        ensure_synth_dataset(real, n_classes=4, n_groups=5, progress=False)
    assert {f: f.read_bytes() for f in files} == content


def test_synth_cli_names_the_flag(tmp_path):
    "A folder already generated: the command says to pass --overwrite (a flag), not overwrite=True (a Python argument)."
    d = tmp_path / "s"
    assert _run("data", "synth", str(d), "--preset", "tiny", "--workers", "1").returncode == 0
    r = _run("data", "synth", str(d), "--preset", "tiny")
    assert r.returncode == 2 and "--overwrite" in r.stderr and "overwrite=True" not in r.stderr, r.stderr
    assert _run("data", "synth", str(d), "--preset", "tiny", "--overwrite", "--workers", "1").returncode == 0


def test_synth_generation_is_locked(tmp_path):
    "Two processes asking for the same generated dataset at once: one generates, the other waits and finds it done."
    dest = tmp_path / "shared"
    code = (
        "import sys; from esn_video.data.synth import ensure_synth_dataset; "
        f"ensure_synth_dataset({str(dest)!r}, progress=False, workers=1, n_classes=12, n_groups=8, clips_per_group=2, "
        "n_frames=24, size=(32, 24), log=lambda m: print(m, flush=True))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    said = "".join(o for o, _ in outs)
    assert said.count("generating the dataset") == 1, said
    assert len(list((dest / "UCF-101").rglob("*.avi"))) == 12 * 8 * 2


def test_features_follow_video_content(tmp_path):
    "A video replaced after its features were cached: the frame cache decodes it again and its features are re-extracted."
    from esn_video.features import build_encoder, extract_features

    root = make_synth_dataset(tmp_path / "t", n_classes=4, n_groups=5, clips_per_group=1, n_frames=16, size=(32, 24),
                              progress=False, workers=1)  # fmt: skip
    idx = ucf101_index(root, val_fraction=0)
    spec = ClipSpec(n_frames=8, stride=2, size=(32, 24))
    enc = build_encoder("pixels", size=4)

    def features(records):
        c = build_frame_cache(idx.train + idx.test, tmp_path / "fc", size=(32, 24), progress=False, log=lambda *a: None)
        return c, extract_features(ClipDataset(records, c, spec), enc, tmp_path / "feat", device="cpu")

    _, train0 = features(idx.train)
    _, test0 = features(idx.test)
    idx.train[0].path.write_bytes(idx.test[0].path.read_bytes())  # other content under the same name
    c, train1 = features(idx.train)
    assert c.report["decoded"] == 1
    assert train1.meta["files"] != train0.meta["files"]
    assert not torch.equal(train1.sequences[0], train0.sequences[0])
    assert torch.equal(train1.sequences[1:], train0.sequences[1:])
    _, test1 = features(idx.test)  # unchanged videos: still a hit
    assert test1.meta["files"] == test0.meta["files"] and torch.equal(test1.sequences, test0.sequences)


def test_two_cache_builds_at_once(many_tree, tmp_path):
    "A second `data cache` of the same folder waits for the first (one line naming the lock) and finds the work done."
    out = tmp_path / "c"
    cmd = [
        CLI,
        "data",
        "cache",
        str(many_tree),
        "--out",
        str(out),
        "--size",
        "32x24",
        "--workers",
        "2",
        "--no-progress",
    ]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mf, t0 = out / "manifest.jsonl", time.time()
    while time.time() - t0 < 60 and (not mf.exists() or not mf.read_text()):
        time.sleep(0.01)
    second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    (_o1, e1), (o2, e2) = first.communicate(timeout=300), second.communicate(timeout=300)
    assert (first.returncode, second.returncode) == (0, 0), (e1, e2)
    waits = [ln for ln in o2.splitlines() if "waiting" in ln]
    assert len(waits) == 1 and str(out / ".lock") in waits[0], o2
    assert "0 videos to decode (800 already done)" in o2, o2
    assert len(FrameCache(out)) == 800


@pytest.mark.parametrize("command", ["cache", "synth"])
def test_killed_command_leaves_no_workers(command, many_tree, tmp_path):
    "`kill -9` of a command running 2 worker processes: the workers end with it."
    if command == "cache":
        args = ["data", "cache", str(many_tree), "--out", str(tmp_path / "c"), "--size", "src", "--no-progress"]
    else:
        args = ["data", "synth", str(tmp_path / "s"), "--preset", "bench"]
    proc = subprocess.Popen([CLI, *args, "--workers", "2"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent, t0 = psutil.Process(proc.pid), time.time()
    while len(parent.children()) < 2 and time.time() - t0 < 60:
        time.sleep(0.01)
    workers = parent.children()
    try:
        assert len(workers) == 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        _, alive = psutil.wait_procs(workers, timeout=5)
        assert alive == [], f"workers left running after their parent was killed: {alive}"
    finally:
        for w in workers:
            if w.is_running():
                w.kill()


@pytest.mark.parametrize("command", ["cache", "synth"])
def test_unwritable_outputs_say_so_in_one_line(command, tree, tmp_path):
    "An output folder that cannot be written: one line naming it and why, exit status 1, no traceback."
    (tmp_path / "afile").write_text("")
    bad = [tmp_path / "afile" / "out", Path("/proc/esn-video-test/out")]
    if os.geteuid() != 0:  # root writes into read-only folders
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        bad.append(ro / "out")
    for b in bad:
        if command == "cache":
            r = _run("data", "cache", str(tree), "--out", str(b), "--size", "32x24", "--no-progress")
        else:
            r = _run("data", "synth", str(b), "--preset", "tiny")
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1 and len(lines) == 1, r.stderr
        assert str(b) in lines[0] and "Traceback" not in r.stderr, r.stderr


def _small_files(limit: int):
    "For a subprocess: files may grow to `limit` bytes only (a disk that fills up), failing with EFBIG."

    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize("workers", ["1", "2"])
def test_full_disk_names_the_file(tree, tmp_path, workers):
    "A write that fails half-way (here: a file-size limit) ends the command in one line naming the file, exit status 1."
    out = tmp_path / "c"
    r = subprocess.run(
        [CLI, "data", "cache", str(tree), "--out", str(out), "--size", "64x48", "--workers", workers, "--no-progress"],
        capture_output=True, text=True, preexec_fn=_small_files(20_000),
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {out / 'frames'}" in lines[0] and ".npy: " in lines[0], lines
    r = subprocess.run(
        [CLI, "data", "synth", str(tmp_path / "s"), "--preset", "tiny", "--size", "320x240", "--workers", workers,
         "--no-progress"],
        capture_output=True, text=True, preexec_fn=_small_files(20_000),
    )  # fmt: skip
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {tmp_path / 's' / 'UCF-101'}" in lines[0] and ".avi: " in lines[0], lines


def test_every_video_broken_says_why(tmp_path):
    "Every video of the dataset broken: the clip dataset says how many were given and why they were skipped."
    root = make_synth_dataset(tmp_path / "t", n_classes=4, n_groups=5, clips_per_group=1, n_frames=16, size=(32, 24),
                              progress=False, workers=1)  # fmt: skip
    for f in (root / "UCF-101").rglob("*.avi"):
        f.write_bytes(os.urandom(3000))
    idx = ucf101_index(root)
    c = build_frame_cache(root, tmp_path / "c", size=(32, 24), progress=False, log=lambda *a: None)
    assert len(c) == 0 and len(c.skipped) == 20
    with pytest.raises(ValueError, match=rf"none of the {len(idx.train)} videos given can be used: all "
                                         rf"{len(idx.train)} were skipped \(.*FFmpeg cannot open"):  # fmt: skip
        ClipDataset(idx.train, c, ClipSpec(8, 2, (32, 24)), train=True)


def test_listed_but_missing_video_is_skipped_and_reported(tmp_path):
    "A listed video missing on disk: skipped with its reason by the index, the cache and the clip datasets (not fatal)."
    root = make_synth_dataset(tmp_path / "t", n_classes=4, n_groups=5, clips_per_group=1, n_frames=16, size=(32, 24),
                              progress=False, workers=1)  # fmt: skip
    idx = ucf101_index(root)
    gone, broken = idx.train[1], idx.test[0]
    gone.path.unlink()
    broken.path.write_bytes(b"not a video")
    idx = ucf101_index(root)
    assert idx.missing == {gone.rel: "listed in trainlist01.txt but missing"}
    assert gone in idx.train  # kept in its split, as the list says
    r = _run("data", "cache", str(root), "--out", str(tmp_path / "c"), "--size", "32x24", "--no-progress")
    assert r.returncode == 0, r.stderr
    assert f"skipped {gone.path}: listed in trainlist01.txt but missing" in r.stdout, r.stdout
    c = FrameCache(tmp_path / "c")
    spec = ClipSpec(8, 2, (32, 24))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in (c, VideoSource(size=(32, 24))):
            train, test = ClipDataset(idx.train, source, spec), ClipDataset(idx.test, source, spec)
            assert train.dropped == {gone: "listed in trainlist01.txt but missing"}
            assert list(test.dropped) == [broken] and "FFmpeg cannot open" in test.dropped[broken]
            assert len(train) == len(idx.train) - 1 and len(test) == len(idx.test) - 1
