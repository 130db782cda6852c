#!/usr/bin/env bash
# The CPU sweep whose files the README shows: run it on an otherwise idle machine.
#   tools/sweep_cpu.sh            -> results/<machine>/{sweep-fast-cnn,sweep-small-b128,dawnbench,train-throughput}.json
# 1. fast and cnn (the issue's 3x target) at batch 32/64/128, every backend x precision available here;
# 2. every other shipped checkpoint at batch 128 on eager and ONNX Runtime (fp32, bf16, int8);
# 3. DAWNBench batch-1 latency (10,000 test images one at a time) for fast and cnn;
# 4. training-step throughput per model, fp32 vs bf16 (pytest-benchmark).
set -euo pipefail
cd "$(dirname "$0")/.."
export CIFAR_SPEED_DATA="${CIFAR_SPEED_DATA:-$(cd .. && pwd)/shared/cifar10}"
cs=.venv/bin/cifar-speed
machine=$(.venv/bin/python -c "from cifar_speed.provenance import machine_slug; print(machine_slug())")
out=results/$machine
others=$(ls results/checkpoints/*.json | grep -v -E '/(fast|cnn)\.json$')
$cs bench results/checkpoints/fast.json results/checkpoints/cnn.json --name sweep-fast-cnn --no-progress || echo "sweep-fast-cnn: some cells failed (see the file)"
$cs bench $others --batch 128 --backend eager,onnxrt --name sweep-small-b128 --no-progress || echo "sweep-small-b128: some cells failed"
$cs bench results/checkpoints/fast.json results/checkpoints/cnn.json --batch 1 --dawnbench \
    --backend eager,onnxrt --name dawnbench --no-progress || echo "dawnbench: some cells failed"
.venv/bin/python -m pytest bench/test_training.py --benchmark-only -q -p no:cacheprovider \
    --benchmark-json "$out/train-throughput.json"
