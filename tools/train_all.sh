#!/usr/bin/env bash
# Train recipes one after another into runs/ (resumable), logging each to runs/logs/<name>.log.
#   tools/train_all.sh fast cnn deepnn lightnn lightnn_kd ...     (default: every recipe in train/)
# Extra arguments for `cifar-speed train` go in $TRAIN_ARGS, e.g. TRAIN_ARGS="--seed 1 --name fast_s1".
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p runs/logs
recipes=("$@")
[ ${#recipes[@]} -gt 0 ] || recipes=($(ls train/*.toml | xargs -n1 basename | sed 's/\.toml$//'))
for r in "${recipes[@]}"; do
  echo "$(date -Is) start $r" >> runs/logs/queue.log
  .venv/bin/cifar-speed train "train/$r.toml" --out runs --resume --no-progress ${TRAIN_ARGS:-} \
      --data-dir "${CIFAR_SPEED_DATA:-../shared/cifar10}" > "runs/logs/$r${LOG_SUFFIX:-}.log" 2>&1 \
    && echo "$(date -Is) done $r" >> runs/logs/queue.log \
    || echo "$(date -Is) FAILED $r (see runs/logs/$r.log)" >> runs/logs/queue.log
done
