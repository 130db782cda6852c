"""One rank of tests/test_distributed.py, started by torchrun (not collected by pytest).

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/_ddp_worker.py SPEC.json

Runs the real `cifar_speed.train.loop.train` under DDP (gloo) on the fake data set the test wrote,
and saves every rank's final weights so the test can compare ranks with each other and with a
single-process run. SPEC.json: {"sums": ..., "data_dir": ..., "out": ..., "runs": [...]}.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from safetensors.torch import save_file
from torch import nn

from cifar_speed import data as D
from cifar_speed.train import loop
from cifar_speed.train.recipe import parse_recipe

BUILT: list[nn.Module] = []
_create = loop.create_model


def create_without_dropout(name: str, **kwargs) -> nn.Module:
    """The recipe's model with dropout off (p=0), so a rank's shard and a single process's full batch
    see the same function; and remembered, so every rank can save what it trained."""
    model = _create(name, **kwargs)
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
    BUILT.append(model)
    return model


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    D.SHA256 = {k: tuple(v) for k, v in spec["sums"].items()}
    loop.create_model = create_without_dropout
    rank = int(os.environ["RANK"])
    out = Path(spec["out"])
    for run in spec["runs"]:
        recipe = parse_recipe(run["recipe"], name=run["name"])
        loop.train(recipe, data_dir=spec["data_dir"], out_dir=out / run["out"], epochs=run["epochs"],
                   resume=run.get("resume", False), show_progress=False)
        if run.get("save"):
            state = {k: v.detach().cpu().contiguous() for k, v in BUILT[-1].state_dict().items()}
            save_file(state, str(out / f"{run['save']}.rank{rank}.safetensors"))


if __name__ == "__main__":
    main(sys.argv[1])
