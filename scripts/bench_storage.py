"""Benchmark of the Blob storage path on a real Azurite (prints figures and ratios; asserts nothing).

1. Upload of a generated dataset tree of many small video files: `esn_video.cloud.storage.upload_tree` (parallel,
   MD5-checked, skip-if-there) against a plain sequential loop of `BlobClient.upload_blob`, same tree, same
   emulator, one run each into a fresh prefix (the target is a ratio >= 3). On loopback the emulator's own CPU time
   bounds both (it is printed); `--latency-ms` runs the same comparison once more through a loopback proxy that holds
   each response for that long, a stand-in for the round trip to a real account (not Azure: the figure says what
   parallel transfers buy when requests wait on a network, nothing about Azure's own speed).
2. Training from a dataset whose `dataset.root` is a blob location, after its first pass filled the local cache,
   against the same dataset on local disk: clips/s of preparing the split (index, frame cache, the blob listing
   for the first) and training a small CNN+GRU end to end on every training clip for `--epochs` epochs; the faster of
   `--repeats` interleaved runs of each counts (the target is a ratio >= 0.9).

    .venv/bin/python scripts/bench_storage.py [--preset small] [--workers 16] [--epochs 3] [--latency-ms 20]
                                              [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path


def _cpu(pid: int) -> float:
    "CPU seconds used so far by process `pid` and its children."
    import psutil

    proc = psutil.Process(pid)
    return sum(t.user + t.system for t in [proc.cpu_times()] + [c.cpu_times() for c in proc.children(recursive=True)])


class _DelayProxy:
    "A loopback TCP proxy that holds the first bytes of every response for `delay` seconds: one network round trip per request."

    def __init__(self, upstream_port: int, delay: float):
        import socket
        import threading

        self.upstream, self.delay = upstream_port, delay
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for s in (client, server):  # no Nagle: the proxy adds its delay and nothing else
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sent = threading.Event()  # the client spoke since the last response began
            threading.Thread(target=self._pipe, args=(client, server, sent, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, sent, True), daemon=True).start()

    def _pipe(self, src, dst, sent, is_response: bool) -> None:
        try:
            while data := src.recv(1 << 16):
                if is_response and sent.is_set():
                    sent.clear()
                    time.sleep(self.delay)
                elif not is_response:
                    sent.set()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def _upload(tree: Path, target, workers: int, repeats: int, az_pid: int, tag: str = "") -> dict:
    from esn_video.cloud.storage import local_files, upload_tree

    files = local_files(tree)
    n_bytes = sum(p.stat().st_size for p in files.values())
    container = target.container(target.role("datasets"))
    upload_tree(tree, "az://ucf101-dataset/warmup", target, workers=workers, only=list(files)[:40], log=None)
    for rel in list(files)[:40]:
        container.get_blob_client(f"warmup-seq/{rel}").upload_blob(files[rel].read_bytes(), overwrite=True)
    runs: dict[str, list[tuple[float, float, float]]] = {"sequential": [], "parallel": []}  # wall, emulator, client

    def timed(name: str, fn) -> None:
        a0, c0, t0 = _cpu(az_pid), time.process_time(), time.perf_counter()
        fn()
        runs[name].append((time.perf_counter() - t0, _cpu(az_pid) - a0, time.process_time() - c0))

    def sequential(r: int) -> None:
        for rel, p in files.items():
            container.get_blob_client(f"{tag}sequential{r}/{rel}").upload_blob(p.read_bytes(), overwrite=True)

    def parallel(r: int) -> None:
        rep = upload_tree(tree, f"az://ucf101-dataset/{tag}parallel{r}", target, workers=workers, log=None)
        assert len(rep.transferred) == len(files) and not rep.failed

    for r in range(repeats):  # interleaved, each into a fresh prefix; the fastest of each counts
        timed("sequential", lambda r=r: sequential(r))
        timed("parallel", lambda r=r: parallel(r))
    t0 = time.perf_counter()
    again = upload_tree(tree, f"az://ucf101-dataset/{tag}parallel0", target, workers=workers, log=None)
    rerun = time.perf_counter() - t0
    assert len(again.skipped) == len(files)
    s, p = min(runs["sequential"]), min(runs["parallel"])
    return dict(files=len(files), megabytes=n_bytes / 1e6, workers=workers, sequential_s=s[0], parallel_s=p[0],
                parallel_speedup=s[0] / p[0], files_per_s_parallel=len(files) / p[0],
                files_per_s_sequential=len(files) / s[0], rerun_nothing_to_send_s=rerun,
                emulator_cpu_s={"sequential": s[1], "parallel": p[1]}, client_cpu_s={"sequential": s[2], "parallel": p[2]},
                runs=runs)  # fmt: skip


def _train_once(cfg, epochs: int) -> tuple[float, float, int]:
    "Seconds to prepare split 1 and train a small CNN+GRU on every training clip for `epochs` epochs, seconds of the epochs alone, clips seen."
    import torch

    from esn_video.prepare import prepare_split, split_dataloaders

    t0 = time.perf_counter()
    data = prepare_split(cfg, 1, verbose=False)
    dls = split_dataloaders(cfg, data, bs=8, device="cpu", seed=0, test=False)
    from esn_video.features import EndToEndModel, build_encoder
    from esn_video.models.registry import build_model

    torch.manual_seed(0)
    enc = build_encoder("cnn")  # what configs/end_to_end.yaml trains: a small CNN per frame and a GRU over time
    model = EndToEndModel(enc, build_model("gru", enc.n_features, len(data.classes), hidden=32))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    seen, t1 = 0, time.perf_counter()
    for _ in range(epochs):
        for xb, yb in dls.train:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            seen += len(yb)
    return time.perf_counter() - t0, time.perf_counter() - t1, seen


def _training(tree: Path, work: Path, conn: str, epochs: int, repeats: int) -> dict:
    from esn_video.config import config_from_dict, read_yaml

    base = read_yaml((Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml").read_text())
    base.update(mlflow={"enabled": False})
    base["features"] = {"mode": "end_to_end", "workers": 0}
    base["dataset"] = {"kind": "ucf101", "root": str(tree)}
    base["cache"] = {**base["cache"], "root": str(work / "cache-local")}
    local = config_from_dict(base)
    blob = config_from_dict({**base, "dataset": {"kind": "ucf101", "root": "az://ucf101-dataset/parallel0"},
                             "cache": {**base["cache"], "root": str(work / "cache-blob")}})  # fmt: skip
    os.environ["AZURE_STORAGE_CONNECTION_STRING"] = conn
    os.environ["ESN_VIDEO_DATA"] = str(work / "data")
    t0 = time.perf_counter()
    _train_once(blob, 1)  # the first pass: fetches the dataset, builds its frame cache
    first = time.perf_counter() - t0
    _train_once(local, 1)  # the local dataset's frame cache, built once too
    runs: dict[str, list[float]] = {"local": [], "blob": []}
    epochs_only: dict[str, list[float]] = {"local": [], "blob": []}
    seen = 0
    for r in range(repeats):  # interleaved, the order swapped every time
        for name, cfg in (("local", local), ("blob", blob))[:: 1 if r % 2 == 0 else -1]:
            s, e, seen = _train_once(cfg, epochs)
            runs[name].append(s)
            epochs_only[name].append(e)
    from esn_video.cloud.storage import fetch_dataset

    checks = []
    for _ in range(3):  # what a run on the Blob dataset does besides the local one: list the location, fetch nothing
        t0 = time.perf_counter()
        fetch_dataset(blob.dataset.root, log=None)
        checks.append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in runs.items()}
    return dict(epochs=epochs, clips=seen, first_pass_s=first, local_s=best["local"], blob_s=best["blob"],
                local_clips_per_s=seen / best["local"], blob_clips_per_s=seen / best["blob"],
                blob_vs_local=best["local"] / best["blob"], blob_check_s=min(checks),
                epochs_blob_vs_local=min(epochs_only["local"]) / min(epochs_only["blob"]), runs=runs,
                epochs_only=epochs_only)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="small", choices=["tiny", "small", "default"], help="generated dataset size")
    p.add_argument("--workers", type=int, default=32, help="parallel transfers of the project's upload (default 32)")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per timed run (default 3)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved timed runs of each; the fastest counts")
    p.add_argument("--latency-ms", type=float, default=0.0,
                   help="also compare the uploads through a loopback proxy adding this round trip per request (0: skip)")  # fmt: skip
    p.add_argument("--json", type=Path, help="write every figure to this JSON file")
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)  # the same compute on both sides, less noise from a shared machine
    from esn_video.cloud.azurite import Azurite
    from esn_video.cloud.storage import CONNECTION_ENV, create_containers, storage_target
    from esn_video.data.synth import SYNTH_PRESETS, make_synth_dataset

    with tempfile.TemporaryDirectory(prefix="bench-storage-") as tmp, Azurite(Path(tmp) / "azurite") as az:
        work = Path(tmp)
        tree = work / "dataset"
        make_synth_dataset(tree, **SYNTH_PRESETS[a.preset], workers=os.cpu_count() or 1, progress=False)
        target = storage_target(env={CONNECTION_ENV: az.connection_string})
        create_containers(target, log=None)
        up = _upload(tree, target, a.workers, a.repeats, az.proc.pid)
        print(f"upload of {up['files']} small video files ({up['megabytes']:.1f} MB) to Azurite:")
        print(
            f"  sequential upload_blob loop  {up['sequential_s']:7.2f} s  {up['files_per_s_sequential']:7.1f} files/s"
        )
        print(f"  parallel upload ({a.workers} workers)  {up['parallel_s']:7.2f} s  {up['files_per_s_parallel']:7.1f} files/s"
              f"  -> {up['parallel_speedup']:.2f}x (target >= 3x; fastest of {a.repeats} interleaved runs each)")  # fmt: skip
        print(f"  the same upload again (all there, nothing sent)  {up['rerun_nothing_to_send_s']:.2f} s")
        e, c = up["emulator_cpu_s"], up["client_cpu_s"]
        print(f"  CPU seconds, emulator / client: sequential {e['sequential']:.2f} / {c['sequential']:.2f}, parallel "
              f"{e['parallel']:.2f} / {c['parallel']:.2f} (the parallel upload takes at least the larger of its two, "
              f"on {os.cpu_count()} CPUs shared with whatever else runs here)")  # fmt: skip
        if a.latency_ms > 0:
            proxy = _DelayProxy(az.port, a.latency_ms / 1e3)
            far = storage_target(env={CONNECTION_ENV: az.connection_string.replace(f":{az.port}/", f":{proxy.port}/")})
            up["with_latency"] = lat = _upload(tree, far, a.workers, a.repeats, az.proc.pid, tag="far-")
            lat["latency_ms"] = a.latency_ms
            proxy.close()
            print(f"  through a loopback proxy adding {a.latency_ms:g} ms per request (a stand-in for a network, not Azure):"
                  f" sequential {lat['sequential_s']:.2f} s, parallel {lat['parallel_s']:.2f} s"
                  f" -> {lat['parallel_speedup']:.2f}x (the loop waited"
                  f" {(lat['sequential_s'] - up['sequential_s']) / up['files'] * 1e3:.0f} ms more per file)")  # fmt: skip
        tr = _training(tree, work, az.connection_string, a.epochs, a.repeats)
        print(f"training, {tr['epochs']} epochs of {tr['clips'] // tr['epochs']} clips, after a first pass "
              f"({tr['first_pass_s']:.1f} s) filled the local cache:")  # fmt: skip
        print(f"  dataset on local disk    {tr['local_s']:7.2f} s  {tr['local_clips_per_s']:7.1f} clips/s")
        print(f"  dataset in Blob (az://)  {tr['blob_s']:7.2f} s  {tr['blob_clips_per_s']:7.1f} clips/s"
              f"  -> {tr['blob_vs_local']:.2f}x of local (target >= 0.9x)")  # fmt: skip
        print(f"  the epochs alone (after preparing the split): {tr['epochs_blob_vs_local']:.2f}x; the difference is "
              f"a fixed cost per run: listing the location to find every file already here takes "
              f"{tr['blob_check_s']:.2f} s")  # fmt: skip
    out = {"preset": a.preset, "cpus": os.cpu_count(), "upload": up, "training": tr}
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
