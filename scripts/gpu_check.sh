#!/usr/bin/env bash
# How the project's CUDA paths are checked on a GPU machine, in one run of a few minutes:
#   a. `bench esn --device cuda` (the project's ESN on the GPU, reservoirpy on the CPU as the reference) and the same
#      benchmark on the machine's CPU cores, for a side-by-side;
#   b. `data synth` (the default dataset), then `train configs/default.yaml` for the ESN (random search over
#      segments / model-space / mean+last readouts, closed-form ridge) and the GRU, on the GPU, MLflow off;
#   c. `train configs/end_to_end.yaml` for the ESN (CNN + fixed reservoir + readout trained by gradient on the GPU,
#      clips from the loader with pinned memory and non-blocking copies).
# Every step is time-limited, logged, and the run goes on past a failed one; the end prints (and writes to
# $OUT/summary.txt) each step's exit status and seconds.
#
# Usage, from the repository root:  OUT=/some/folder bash scripts/gpu_check.sh
#   Wheels of what the machine lacks (fastai & co., PyAV, reservoirpy) are installed from .whl/ into /tmp/site
#   (no `pip install -e`: the repository root goes on PYTHONPATH). To make .whl/ (ignored by git) for a Python 3.12
#   machine that has torch, numpy, pandas, scipy, matplotlib, tensorboard and the like but not these:
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#       av==18.1.0 beartype==0.23.1 fastai==2.8.12 fastcore==2.2.41 fastdownload==0.0.8 fastprogress==1.0.3 \
#       fasttransform==0.0.5 plum-dispatch==2.9.0 reservoirpy==0.4.2 filelock==4.3.1 scikit-learn==1.9.1 \
#       joblib==1.6.0 threadpoolctl==3.8.0
#   (fastprogress 1.0.3: later versions pull in python-fasthtml; fastai works with it.)
# Environment knobs (for a dry run on a machine without a GPU):
#   GPU_CHECK_DEVICE=cpu      device of the training runs and of the first benchmark (default cuda)
#   PY=/path/to/python        the interpreter (default python3)
#   GPU_CHECK_WHEELS=0        do not install wheels (PY already has everything); GPU_CHECK_WHEEL_DIR (default .whl)
#   GPU_CHECK_SMALL=1         reduced sizes (smaller benchmark, fewer epochs and search trials)
#   GPU_CHECK_BUDGET=480      seconds for all steps together; each step's limit is cut to what is left
#   GPU_CHECK_WORK=/tmp/gpu_check   where the dataset, cache and runs go
#   GPU_CHECK_CPU_RESERVOIRPY=0     leave reservoirpy out of the CPU benchmark (the device's benchmark measures it on
#                             this machine's CPU too; it is about a minute of the run)
set -u
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}  # progress bars: one line per 10 s in the log

OUT=${OUT:?set OUT to the folder that receives the logs and results}
DEV=${GPU_CHECK_DEVICE:-cuda}
PY=${PY:-python3}
WHEELS=${GPU_CHECK_WHEELS:-1}
WHEEL_DIR=${GPU_CHECK_WHEEL_DIR:-.whl}
SMALL=${GPU_CHECK_SMALL:-0}
BUDGET=${GPU_CHECK_BUDGET:-480}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check}
SITE=${GPU_CHECK_SITE:-/tmp/site}
CORES=$(nproc)
REPO=$(pwd)
mkdir -p "$OUT" "$WORK"
# the project's folders (frame and feature caches, runs, data) under $WORK: nothing is written into the checkout
export ESN_VIDEO_DATA="$WORK/data" ESN_VIDEO_CACHE="$WORK/cache" ESN_VIDEO_MODELS="$WORK/models" ESN_VIDEO_RUNS="$WORK/runs"
START=$(date +%s)
STEPS="$WORK/.steps"  # one line per step (main runs in a pipeline's subshell: no shell variable survives it)
: >"$STEPS"

# step NAME LIMIT_S CMD...: run CMD under `timeout` (cut to the budget left), log its status and seconds
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  if ((left < 10)); then
    echo "=== [$name] skipped: the budget of ${BUDGET}s is spent"
    printf '%-16s rc=%-4s %7s\n' "$name" skip - >>"$STEPS"
    return 0
  fi
  ((limit > left)) && limit=$left
  echo
  echo "=== [$name] $(date -u +%T) limit ${limit}s: $*"
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  t1=$(date +%s.%N)
  local dt
  dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.1f", b - a}')
  ((rc == 124 || rc == 137)) && echo "=== [$name] TIMED OUT after ${limit}s"
  echo "=== [$name] rc=$rc ${dt}s"
  printf '%-16s rc=%-4s %7ss\n' "$name" "$rc" "$dt" >>"$STEPS"
  return 0
}

main() {
  echo "gpu_check: $(date -u +%FT%TZ) repo $REPO device $DEV cores $CORES small $SMALL budget ${BUDGET}s"
  echo "=== environment"
  if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
  "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "torch", torch.__version__, "cuda", torch.version.cuda,
"available", torch.cuda.is_available(), "gpu", torch.cuda.get_device_name() if torch.cuda.is_available() else None,
"threads", torch.get_num_threads())'
  free -g 2>/dev/null | head -2

  if [ "$WHEELS" = 1 ]; then
    echo "=== wheels from $WHEEL_DIR into $SITE"
    ls -la "$WHEEL_DIR"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEEL_DIR"/*.whl ||
      echo "!!! the wheel install failed; the steps below will show what is missing"
    export PYTHONPATH="$SITE:$REPO"
  else
    export PYTHONPATH="$REPO"
  fi
  step imports 120 "$PY" -c 'import time; t=time.perf_counter()
import esn_video.experiment, esn_video.models.bench, esn_video.data.loaders, fastai, av, reservoirpy
print("imports ok in %.1fs: fastai %s, av %s, reservoirpy %s" % (time.perf_counter()-t, fastai.__version__, av.__version__, reservoirpy.__version__))'
  "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' doctor 2>&1 | head -40

  # a. the ESN benchmark on the device, then on the machine's cores
  local bench=(--units 1000,2000)
  [ "$SMALL" = 1 ] && bench=(--units 200 --train 300 --test 100 --batch-size 100 --repeats 1)
  step bench_"$DEV" 170 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
    bench esn --device "$DEV" "${bench[@]}" --json "$OUT/bench_esn_${DEV%%:*}.json"

  # b. the default dataset, then the default config's ESN (with its search) and GRU on the device
  local data="$WORK/data/synth-default"
  local sets=(--set "dataset.root=$data" --set "cache.root=$WORK/cache" --set "models_dir=$WORK/models"
    --set "features.cache_dir=$WORK/cache/features"
    --set "training.device=$DEV" --set mlflow.enabled=false)
  local dflt=() e2e=()
  [ "$SMALL" = 1 ] && dflt=(--set training.epochs=2 --set models.esn.search.trials=2) &&
    e2e=(--set training.epochs=1)
  step synth 120 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
    data synth "$data" --preset default --workers "$CORES"
  step train_esn 120 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
    train configs/default.yaml --model esn --overwrite "${sets[@]}" "${dflt[@]}"
  step train_gru 90 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
    train configs/default.yaml --model gru --overwrite "${sets[@]}" "${dflt[@]}"

  # c. end to end: CNN + ESN trained by gradient on the device, clips through the pinned-memory loader
  step e2e_esn 150 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
    train configs/end_to_end.yaml --model esn --overwrite "${sets[@]}" --set "features.workers=$((CORES / 2))" "${e2e[@]}"

  # a, continued: the CPU side-by-side (last: the least needed if time runs short)
  if [ "$DEV" != cpu ]; then
    local rp=()
    [ "${GPU_CHECK_CPU_RESERVOIRPY:-1}" = 0 ] && rp=(--no-reservoirpy)
    step bench_cpu"$CORES" 170 "$PY" -c 'import sys; from esn_video.cli import main; sys.exit(main())' \
      bench esn --device cpu --threads "$CORES" "${bench[@]}" "${rp[@]}" --json "$OUT/bench_esn_cpu$CORES.json"
  fi

  echo
  echo "=== results: small files of $WORK/models into $OUT/results.tar.gz"
  (cd "$WORK" && find models -type f -size -2M ! -name '*.pth' ! -name '*.pt' ! -name '*.lock' -print0 |
    tar --null -czf "$OUT/results.tar.gz" -T -) && echo "$(tar -tzf "$OUT/results.tar.gz" | wc -l) files, $(du -h "$OUT/results.tar.gz" | cut -f1)"
  echo "=== runs (from each run's metrics.json and environment.json)"
  "$PY" - "$WORK/models" <<'PYEOF'
import json, pathlib, sys

for m in sorted(pathlib.Path(sys.argv[1]).glob("*/*/metrics.json")):
    d = json.loads(m.read_text())
    e = m.parent / "environment.json"
    env = json.loads(e.read_text()) if e.is_file() else {}
    keys = ("valid_accuracy", "fit_seconds", "search_seconds", "feature_seconds", "epochs_run", "peak_memory_mb")
    print(f"{d['experiment']}/{d['run']}: test accuracy {d['accuracy']:.3f}, macro-F1 {d['macro_f1']:.3f}, "
          f"device {env.get('device')} ({env.get('cuda_device')}); " + ", ".join(f"{k} {d.get(k)}" for k in keys))
    print("  hp", json.dumps(d.get("hp")), "| throughput", json.dumps(d.get("throughput"))[:300])
PYEOF
}

main 2>&1 | tee "$OUT/gpu_check.log"
{
  echo "gpu_check summary ($(date -u +%FT%TZ), device $DEV, $CORES cores, total $(($(date +%s) - START))s)"
  cat "$STEPS"
} >"$OUT/summary.txt"
rm -f "$STEPS"
tee -a "$OUT/gpu_check.log" <"$OUT/summary.txt"
