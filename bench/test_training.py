"""Training throughput: one optimiser step per round, every model x fp32 / bf16, on this machine.

    pytest bench/test_training.py --benchmark-only [--benchmark-json results/<machine>/train-throughput.json]

The step is the training loop's own (autocast, channels_last for conv nets, Adam), on a fixed
synthetic batch already on the device: it measures the arithmetic, which is what the precision
changes; data loading is benchmarked by the loop's own images/s in each checkpoint's sidecar.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cifar_speed import backends
from cifar_speed.models import create_model, list_models
from cifar_speed.devices import autocast

DEVICE = backends.default_device()
BATCH = 128
PRECISIONS = [p for p in ("fp32", "bf16") if backends.precision_on_device(p, DEVICE)[0]]
MODELS = [m for m in list_models() if m != "fast_tta"]  # fast_tta shares fast's weights; it is an inference variant


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", MODELS)
def test_train_step(benchmark, name, precision):
    torch.manual_seed(0)
    dev = torch.device(DEVICE)
    model = create_model(name).to(dev).train()
    conv = any(isinstance(m, torch.nn.Conv2d) for m in model.modules())
    fmt = torch.channels_last if conv else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x = torch.randn(BATCH, 3, 32, 32, device=dev).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (BATCH,), device=dev)
    dtype = backends.TORCH_DTYPES[precision]

    def step():
        with autocast(dev, dtype):
            loss = F.cross_entropy(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()

    benchmark.extra_info.update({"model": name, "precision": precision, "batch_size": BATCH, "device": DEVICE,
                                 "channels_last": conv})
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=2)
    benchmark.extra_info["train_images_per_s_median"] = BATCH / benchmark.stats.stats.median
