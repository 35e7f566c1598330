#!/usr/bin/env bash
# One GPU session for the LGG GPU recipe, in the order that matters if time runs out:
#   1. the CUDA-only tests;
#   2. configs/lgg-gpu.toml for 3 epochs on the default split (the real run's images/s on the
#      device data path; it also decodes the slices into the cache the folds then share);
#   3. its 5-fold cross-validation over all patients, one process per fold sharing the GPU
#      (segkit cv --fold K), each fold planning its epochs to fill FOLD_MINUTES, then the
#      out-of-fold scoring;
#   4. the same run on the DataLoader-workers path (the CPU-augmentation baseline), and
#      benchmarks/gpu_throughput.py (training with batches already in GPU memory).
# STEPS picks steps (default "tests run cv paths"); VARIANTS="name:options;name:options" cross-validates
# several variants at once (their folds all share the GPU) and compares each with the first, e.g.
#   STEPS="run cv" VARIANTS="recipe:;e150:--epochs 150 --set train.max_minutes=0" bash benchmarks/lgg_gpu_session.sh
# Every step has its own timeout inside DEADLINE seconds; results (logs, metrics, reports; no
# checkpoints) are packed into $OUT/results.tgz after each step, so a cut-off run still returns them.
#
# On the GPU machine, from the repository root with .device/ beside it (../shared/tools/device/README.md):
#   bash benchmarks/lgg_gpu_session.sh
# A CPU dry run of every step on a few patients, here:
#   PY=.venv/bin/python SKIP_INSTALL=1 DATA=/tmp/lgg6 DEVICE=cpu FOLD_MINUTES=0.3 \
#     EXTRA="--set train.image_size=64 --batch-size 8" OUT=/tmp/gpu-dry bash benchmarks/lgg_gpu_session.sh
set -u
PY=${PY:-python3}
OUT=${OUT:-gpu-results}
CONFIG=${CONFIG:-configs/lgg-gpu.toml}
FOLDS=${FOLDS:-5}
FOLD_MINUTES=${FOLD_MINUTES:-4.5}
DEADLINE=${DEADLINE:-580}
DEVICE=${DEVICE:-cuda}
EXTRA=${EXTRA:-}
# Which steps run (any of: tests run cv paths), and the cross-validated variants, "name:options;name:options"
# (each variant's folds train at the same time as the others'; the first is the one the rest are compared with).
STEPS=${STEPS:-tests run cv paths}
VARIANTS=${VARIANTS:-recipe:}
VARIANT_NAMES=(); VARIANT_OPTIONS=()
IFS=';' read -r -a _variants <<< "$VARIANTS"
for _v in "${_variants[@]}"; do VARIANT_NAMES+=("${_v%%:*}"); VARIANT_OPTIONS+=("${_v#*:}"); done
has() { [[ " $STEPS " == *" $1 "* ]]; }
RES=$(mktemp -d /tmp/lgg-gpu.XXXX)
mkdir -p "$OUT"
# SEGKIT_CACHE_DIR may be set by a caller so that several invocations share the decoded slices.
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1 SEGKIT_CACHE_DIR=${SEGKIT_CACHE_DIR:-$RES/cache}
started=$(date +%s)

elapsed() { echo $(( $(date +%s) - started )); }
step() { echo "[$(elapsed) s] $*" | tee -a "$RES/steps.log"; }
pack() { tar czf "$OUT/results.tgz" --exclude='*.pt' --exclude=cache -C "$RES" . 2>/dev/null; }
left() {  # seconds a step may take: its own limit, or what is left before the deadline
  local rest=$(( DEADLINE - $(elapsed) - 15 ))
  (( rest < $1 )) && echo $(( rest > 1 ? rest : 1 )) || echo "$1"
}

if [[ -z ${SKIP_INSTALL:-} ]]; then
  step "install"
  source benchmarks/device_install.sh || exit 1
fi
DATA=${DATA:-/tmp/data/lgg/kaggle_3m}
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
  $PY -c "import torch, segmentation_models_pytorch as smp; print('torch', torch.__version__, 'smp', smp.__version__)"
  nproc; } > "$RES/machine.txt" 2>&1
cat "$RES/machine.txt"

if has tests; then
step "1. CUDA tests"
timeout "$(left 150)" $PY -m pytest -q -p no:cacheprovider -rs tests/test_device_loader.py tests/test_metrics.py \
  -k cuda > "$RES/cuda-tests.log" 2>&1; echo "rc $?" >> "$RES/cuda-tests.log"; tail -3 "$RES/cuda-tests.log"; pack
fi

rc=0
if has run; then
step "2. one run, device data path, 3 epochs"
timeout "$(left 150)" $PY -m segkit run --config "$CONFIG" --data-root "$DATA" --device "$DEVICE" --epochs 3 \
  --set train.max_minutes=0 --loader device $EXTRA --out "$RES/run-device" > "$RES/run-device.log" 2>&1
rc=$?; echo "rc $rc" >> "$RES/run-device.log"; tail -4 "$RES/run-device.log"; pack
fi
LOADER=()
if (( rc != 0 )); then LOADER=(--loader workers); step "the device path failed: the folds use DataLoader workers"; fi

cv_args() {  # the segkit cv command of variant $1
  local options=${VARIANT_OPTIONS[$1]}
  echo cv --config "$CONFIG" --data-root "$DATA" --device "$DEVICE" --folds "$FOLDS" \
    --set train.max_minutes="$FOLD_MINUTES" "${LOADER[@]}" $EXTRA $options --out "$RES/cv-${VARIANT_NAMES[$1]}"
}
if has cv; then
  step "3. cross-validation of ${#VARIANT_NAMES[@]} variant(s): $FOLDS folds each, all in parallel, $FOLD_MINUTES min each"
  if awk "BEGIN {exit !($FOLD_MINUTES > 0)}"; then
    fold_limit=$(left "$(awk "BEGIN {print int($FOLD_MINUTES * 60 + 150)}")")
  else  # fixed epochs: the folds may take what is left, less 90 s for scoring
    fold_limit=$(( $(left 100000) > 180 ? $(left 100000) - 90 : 90 ))
  fi
  for v in "${!VARIANT_NAMES[@]}"; do
    read -r -a CV <<< "$(cv_args "$v")"
    for ((k = 0; k < FOLDS; k++)); do
      OMP_NUM_THREADS=3 timeout "$fold_limit" $PY -m segkit "${CV[@]}" --fold "$k" \
        > "$RES/fold-${VARIANT_NAMES[$v]}-$k.log" 2>&1 &
      sleep 1
    done
  done
  wait
  grep -h "time budget\|best\b\|Error\|error" "$RES"/fold-*.log | tail -20
  step "3b. out-of-fold scoring"
  for v in "${!VARIANT_NAMES[@]}"; do
    read -r -a CV <<< "$(cv_args "$v")"
    name=${VARIANT_NAMES[$v]}
    timeout "$(left 240)" $PY -m segkit "${CV[@]}" > "$RES/cv-report-$name.txt" 2> "$RES/cv-scoring-$name.log"
    echo "rc $?" >> "$RES/cv-scoring-$name.log"; echo "== $name"; cat "$RES/cv-report-$name.txt"
    if (( v > 0 )); then
      $PY benchmarks/compare_cv.py "$RES/cv-${VARIANT_NAMES[0]}" "$RES/cv-$name" 2>&1 | tail -6
    fi
    pack
  done
fi

if has paths; then
step "4. one run, DataLoader workers path, 2 epochs"
timeout "$(left 120)" $PY -m segkit run --config "$CONFIG" --data-root "$DATA" --device "$DEVICE" --epochs 2 \
  --set train.max_minutes=0 --loader workers $EXTRA --out "$RES/run-workers" > "$RES/run-workers.log" 2>&1
echo "rc $?" >> "$RES/run-workers.log"; tail -3 "$RES/run-workers.log"; pack

step "4b. gpu_throughput.py"
if [[ $DEVICE == cpu ]]; then THROUGHPUT=(--device cpu --dry-run); else THROUGHPUT=(); fi
timeout "$(left 120)" $PY benchmarks/gpu_throughput.py "${THROUGHPUT[@]}" --models smp_unet --batch-sizes 32 64 --no-compile \
  --data-root "$DATA" --loader-presets heavy --json "$RES/gpu_throughput.json" > "$RES/gpu_throughput.log" 2>&1
echo "rc $?" >> "$RES/gpu_throughput.log"; tail -12 "$RES/gpu_throughput.log"
fi
step "done"; pack
