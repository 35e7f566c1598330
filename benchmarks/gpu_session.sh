#!/usr/bin/env bash
# One GPU call that measures what the docs still lack, in one ~9-minute command:
#   0. install the carried wheels and segkit, unpack the LGG slices (../shared/tools/device/README.md);
#   1. at once: the CUDA-only tests; `segkit plan --device cuda` on the hippocampus volumes (the
#      planner times its 3D steps on the GPU and sizes the batch from its free memory); and
#      configs/lgg-gpu.toml for 3 epochs on the default split (the device data path's images/s; it
#      also decodes the slices the LGG folds then share), through benchmarks/lgg_gpu_session.sh;
#   2. at once, all sharing the GPU: the 5 folds of configs/lgg-gpu.toml as it is now
#      (lgg_gpu_session.sh's cv step) and the 5 folds of the GPU plan, FOLD_MINUTES each; then both
#      out-of-fold scorings;
#   3. benchmarks/gpu_throughput.py (training with batches already in GPU memory, and the loaders).
# Results (logs, reports, plans, per-case tables; no checkpoints) land in $OUT: lgg-run/results.tgz,
# lgg-cv/results.tgz, hippocampus.tgz and session.log.
#
# On the GPU machine, from the repository root, with .device/ carried (lgg.pkl, whl/ with nibabel
# added to wheels.sh's list, a copy of the hippocampus folder as .device/hippocampus, and a CPU plan
# of it as .device/hippo3d-cpu-plan.toml, used only if the GPU plan fails):
#   bash benchmarks/gpu_session.sh
# A CPU dry run of every step on a few patients and cases, here:
#   PY=.venv/bin/python SKIP_INSTALL=1 DEVICE=cpu DATA=/tmp/lgg6 HIPPO=/tmp/hippo20 FOLD_MINUTES=0.3 \
#     LGG_EXTRA="--set train.image_size=64 --batch-size 8" OUT=/tmp/gpu-dry bash benchmarks/gpu_session.sh
set -u
PY=${PY:-python3}
OUT=${OUT:-gpu-results}
DEVICE=${DEVICE:-cuda}
FOLD_MINUTES=${FOLD_MINUTES:-3.5}
DEADLINE=${DEADLINE:-540}
HIPPO=${HIPPO:-.device/hippocampus}
LGG_EXTRA=${LGG_EXTRA:-}
FALLBACK_PLAN=${FALLBACK_PLAN:-.device/hippo3d-cpu-plan.toml}  # used only if the GPU plan fails
PARTS=${PARTS:-tests lgg hippo throughput}  # which parts run, e.g. PARTS=hippo for the volumes alone
has() { [[ " $PARTS " == *" $1 "* ]]; }
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RES=$(mktemp -d /tmp/gpu-session.XXXX)
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 SEGKIT_CACHE_DIR=$RES/slice-cache XDG_CACHE_HOME=$RES/xdg
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
step() { echo "[$(elapsed) s] $*" | tee -a "$OUT/session.log"; }
left() {  # seconds a step may take: its own limit, or what is left before the deadline
  local rest=$(( DEADLINE - $(elapsed) - 10 ))
  (( rest < $1 )) && echo $(( rest > 1 ? rest : 1 )) || echo "$1"
}
pack() { tar czf "$OUT/hippocampus.tgz" --exclude='*.pt' --exclude=xdg --exclude=slice-cache -C "$RES" . 2>/dev/null; }

if [[ -z ${SKIP_INSTALL:-} ]]; then
  step "0. install"
  source benchmarks/device_install.sh || exit 1
fi
DATA=${DATA:-/tmp/data/lgg/kaggle_3m}
HIPPO=$(cd "$HIPPO" && pwd)
export SKIP_INSTALL=1 PY DEVICE DATA FOLD_MINUTES

step "1. CUDA tests | segkit plan on the hippocampus volumes | configs/lgg-gpu.toml, 3 epochs"
has tests || PY_TESTS=true
timeout "$(left 120)" ${PY_TESTS:-$PY -m pytest} -q -p no:cacheprovider -rs tests/test_device_loader.py tests/test_metrics.py \
  tests/test_augment3d.py -k "cuda or gpu" > "$RES/cuda-tests.log" 2>&1 &
tests=$!
timeout "$(left 120)" $PY -m segkit plan --dataset msd --data-root "$HIPPO" --device "$DEVICE" \
  --minutes "$FOLD_MINUTES" --set planner.dims=3d --quiet --out "$RES/plan" > "$RES/plan.log" 2>&1 &
plan=$!
has lgg && STEPS=run OUT=$OUT/lgg-run EXTRA="$LGG_EXTRA" DEADLINE=$(left 150) bash benchmarks/lgg_gpu_session.sh \
  > "$RES/lgg-run.log" 2>&1
wait $plan; echo "rc $?" >> "$RES/plan.log"
wait $tests; echo "rc $?" >> "$RES/cuda-tests.log"
tail -2 "$RES/cuda-tests.log"; tail -3 "$RES/lgg-run.log"; grep -E "batch_size|patch_size|epochs =|width =" "$RES/plan/plan.toml"
pack

step "2. cross-validation, all at once: configs/lgg-gpu.toml and the hippocampus GPU plan, 5 folds each, $FOLD_MINUTES min"
fold_limit=$(left "$(awk "BEGIN {print int($FOLD_MINUTES * 60 + 120)}")")
lgg=
if has lgg; then
  STEPS=cv OUT=$OUT/lgg-cv EXTRA="$LGG_EXTRA" DEADLINE=$(( fold_limit + 100 )) bash benchmarks/lgg_gpu_session.sh \
    > "$RES/lgg-cv.log" 2>&1 &
  lgg=$!
fi
HCONFIG=$RES/plan/plan.toml; HSET=()
if [[ ! -f $HCONFIG && -f $FALLBACK_PLAN ]]; then
  # the GPU plan failed: the CPU plan with nnU-Net's GPU width, a batch of 6 and two loader processes
  step "no GPU plan: falling back to $FALLBACK_PLAN on $DEVICE"
  HCONFIG=$FALLBACK_PLAN
  HSET=(--set train.device="$DEVICE" --set model.width=32 --set train.batch_size=6 --set train.workers=2)
fi
HCV=(cv --config "$HCONFIG" --data-root "$HIPPO" --folds 5 --set train.max_minutes="$FOLD_MINUTES" "${HSET[@]}"
     --out "$RES/hippo-cv")
hippo_folds=()
if has hippo && [[ -f $HCONFIG ]]; then
  for k in 0 1 2 3 4; do
    OMP_NUM_THREADS=1 timeout "$fold_limit" $PY -m segkit "${HCV[@]}" --fold "$k" --quiet \
      > "$RES/hippo-fold-$k.log" 2>&1 &
    hippo_folds+=($!)
    sleep 1
  done
fi
for job in "${hippo_folds[@]}"; do wait "$job"; done
step "2b. hippocampus out-of-fold scoring"
grep -h "time budget\|best\b\|Error" "$RES"/hippo-fold-*.log | tail -10
timeout "$(left 150)" $PY -m segkit "${HCV[@]}" > "$RES/hippo-cv-report.txt" 2> "$RES/hippo-cv-scoring.log"
echo "rc $?" >> "$RES/hippo-cv-scoring.log"; cat "$RES/hippo-cv-report.txt"
pack
if [[ -n $lgg ]]; then wait $lgg; tail -30 "$RES/lgg-cv.log"; fi
has throughput || { step "done"; pack; exit 0; }

step "3. gpu_throughput.py"
if [[ $DEVICE == cpu ]]; then THROUGHPUT=(--device cpu --dry-run); else THROUGHPUT=(); fi
timeout "$(left 90)" $PY benchmarks/gpu_throughput.py "${THROUGHPUT[@]}" --models smp_unet unet --batch-sizes 32 64 \
  --no-compile --data-root "$DATA" --loader-workers 8 --loader-presets heavy --json "$RES/gpu_throughput.json" \
  > "$RES/gpu_throughput.log" 2>&1
echo "rc $?" >> "$RES/gpu_throughput.log"; tail -14 "$RES/gpu_throughput.log"
step "done"; pack
