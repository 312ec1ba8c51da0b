"""The whole data pipeline on small generated trees: synth tree -> index -> frame cache -> clip datasets -> loaders.

Covers the cases that cross chapters: damaged videos, a build killed with SIGKILL and resumed, stale parameters,
broken split files, that the temporal augmentations keep the label, that the fused augmentation (one colour matrix,
one crop/resize/flip) matches torchvision's functional ops on cached frames, and that batches handed over by worker
processes through the loader's shared slots equal those built in the main process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from esn_video.core import seed_everything
from esn_video.data.cache import FrameCache, StaleCacheError, build_frame_cache, cache_params
from esn_video.data.decode import decode_video
from esn_video.data.loaders import ClipDataset, ClipSpec, VideoSource, clip_dataloaders, eval_dataloader, sample_indices
from esn_video.data.synth import make_synth_dataset, motion_features
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


def test_killed_build_resumes(tmp_path):
    root = make_synth_dataset(
        tmp_path / "k", n_classes=4, n_groups=5, clips_per_group=4, n_frames=60, size=(160, 120), progress=False
    )
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
    assert tb[0].shape == (5, 3, 8, 3, 20, 28)
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
