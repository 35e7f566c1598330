#!/usr/bin/env bash
# Issue 41's "no behaviour change": the same fixed-seed runs with the code before the house's refactor
# (e876cdd, the commit before the sliding-window owner) and with the current checkout; their metrics.csv
# must be identical byte for byte. A 2D run on four LGG patients and a 3D run on synthetic Decathlon
# volumes (sliding-window validation). Usage, from the repository root with .venv installed:
#     bash benchmarks/same_metrics_before_after.sh [BEFORE_REV]
# Writes under ${WORK:-/tmp/same-metrics}; copies the four metrics.csv into benchmarks/results/house/.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
BEFORE=${1:-e876cdd}
WORK=${WORK:-/tmp/same-metrics}
PY=$REPO/.venv/bin/python
LGG=${LGG:-$REPO/../shared/data/lgg/kaggle_3m}
rm -rf "$WORK"; mkdir -p "$WORK"
git -C "$REPO" worktree add -q --detach "$WORK/before-tree" "$BEFORE"
trap 'git -C "$REPO" worktree remove --force "$WORK/before-tree"' EXIT
export OMP_NUM_THREADS=1 SEGKIT_DISABLE_PLUGIN_AUTOLOAD=1 XDG_CACHE_HOME=$WORK/cache
(cd "$REPO/tests" && "$PY" -c "from pathlib import Path; from volumes import write_msd; write_msd(Path('$WORK/msd'), cases=6, shape=(20, 24, 12))")
LGG_ARGS=(run --dataset lgg --model unet --loss bce_dice --data-root "$LGG"
  --set 'dataset.cases=["TCGA_CS_6665_20010817","TCGA_CS_6666_20011109","TCGA_CS_6667_20011105","TCGA_CS_6668_20011025"]'
  --image-size 64 --epochs 3 --batch-size 8 --device cpu --seed 3 --quiet)
MSD_ARGS=(run --dataset msd --data-root "$WORK/msd" --model unet3d --set model.width=4 --set model.stages=3 --loss ce_dice
  --set 'train.patch_size=[16,16,8]' --set train.window_overlap=0.25 --batch-size 2 --device cpu --quiet --epochs 3
  --set split.val_fraction=0.34 --set split.test_fraction=0 --seed 5)
for side in before after; do
  tree=$REPO; [ "$side" = before ] && tree=$WORK/before-tree
  (cd "$tree" && PYTHONPATH=$tree/toolkit:$tree/plugins "$PY" -m segkit "${LGG_ARGS[@]}" --out "$WORK/lgg2d-$side")
  (cd "$tree" && PYTHONPATH=$tree/toolkit:$tree/plugins "$PY" -m segkit "${MSD_ARGS[@]}" --out "$WORK/msd3d-$side")
done
mkdir -p "$REPO/benchmarks/results/house"
status=0
for run in lgg2d msd3d; do
  cp "$WORK/$run-before/metrics.csv" "$REPO/benchmarks/results/house/$run-before-metrics.csv"
  cp "$WORK/$run-after/metrics.csv" "$REPO/benchmarks/results/house/$run-after-metrics.csv"
  if cmp -s "$WORK/$run-before/metrics.csv" "$WORK/$run-after/metrics.csv"; then echo "$run: the same metrics.csv"
  else echo "$run: DIFFERENT"; diff "$WORK/$run-before/metrics.csv" "$WORK/$run-after/metrics.csv" || true; status=1; fi
done
exit $status
