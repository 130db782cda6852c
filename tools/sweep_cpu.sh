#!/usr/bin/env bash
# The CPU sweep whose files the README shows: run it on an otherwise idle machine.
#   tools/sweep_cpu.sh   -> results/<machine>/{sweep-fast-cnn,sweep-others,sweep-mobilenetv3_small,dawnbench,train-throughput}.json
# 1. every shipped checkpoint x every backend and precision available here x batch 32/64/128,
#    one process per group so that each group's ratios come from one run (fast and cnn first: the
#    issue's 3x target; mobilenetv3_small alone, it was trained last);
# 2. DAWNBench batch-1 latency (10,000 test images one at a time) for fast and cnn;
# 3. training-step throughput per model, fp32 vs bf16 (pytest-benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
export CIFAR_SPEED_DATA="${CIFAR_SPEED_DATA:-$(cd .. && pwd)/shared/cifar10}"
cs=.venv/bin/cifar-speed
ck=results/checkpoints
machine=$(.venv/bin/python -c "from cifar_speed.provenance import machine_slug; print(machine_slug())")
out=results/$machine
$cs bench $ck/fast.json $ck/cnn.json --name sweep-fast-cnn --no-progress || echo "sweep-fast-cnn: some cells failed (see the file)"
$cs bench $ck/{lightnn,lightnn_kd,lightnn_cosine,lightnn_regressor,lightnn_kd_tuned,mlp,deepnn,cnn_tuned}.json \
    --name sweep-others --no-progress || echo "sweep-others: some cells failed"
$cs bench $ck/mobilenetv3_small.json --name sweep-mobilenetv3_small --no-progress || echo "sweep-mobilenetv3_small: some cells failed"
$cs bench $ck/fast.json $ck/cnn.json --batch 1 --dawnbench \
    --backend eager,onnxrt --name dawnbench --no-progress || echo "dawnbench: some cells failed"
.venv/bin/python -m pytest bench/test_training.py --benchmark-only -q -p no:cacheprovider \
    --benchmark-json "$out/train-throughput.json"
