"""DistributedDataParallel training on this CPU: 2 gloo processes launched by torchrun.

One torchrun launch (tests/_ddp_worker.py) runs the real training loop three ways on a small fake
data set whose size divides into equal per-rank shards:
  * 2 epochs straight;
  * 1 epoch, then `resume=True` up to 2 epochs (rank 0 wrote the resume point; both ranks read it);
  * 1 epoch of regressor distillation (the student's feature map and the regressor both go through DDP).
The test then checks that the ranks hold identical weights, that the 2-process result equals one
process training on the same global batches (dropout off, so the shard split cannot matter), and
that resuming gives the same weights as not stopping.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cifar_speed import data as D
from cifar_speed.checkpoint import load_checkpoint, save_checkpoint
from cifar_speed.models import create_model
from cifar_speed.train import loop
from cifar_speed.train.recipe import parse_recipe

from _fakedata import REPO, write_fake_cifar

N_TRAIN, N_TEST, BATCH = 256, 50, 32   # 8 steps per epoch, 16 images per rank per step

PLAIN = f"""
model = "lightnn"
seed = 3
[data]
batch_size = {BATCH}
[optim]
name = "sgd"
lr = 0.05
momentum = 0.9
[train]
precision = "fp32"
"""


def regressor_recipe(teacher: Path) -> str:
    return f"""
model = "lightnn"
seed = 3
[data]
batch_size = {BATCH}
normalize = "imagenet"
[optim]
name = "sgd"
lr = 0.05
[train]
precision = "fp32"
[distill]
kind = "regressor"
teacher = "{teacher}"
"""


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """Launch the 2-rank worker once; returns (tmp folder, data root, checksums)."""
    tmp = tmp_path_factory.mktemp("ddp")
    sums = write_fake_cifar(tmp / "data" / D.FOLDER, n_train=N_TRAIN, n_test=N_TEST, seed=1)
    torch.manual_seed(0)
    teacher = save_checkpoint(tmp / "teacher", create_model("deepnn"),
                              {"model": "deepnn", "normalize": {"mean": list(D.IMAGENET_MEAN), "std": list(D.IMAGENET_STD)}})
    spec = {"sums": sums, "data_dir": str(tmp / "data"), "out": str(tmp), "runs": [
        {"name": "plain", "recipe": PLAIN, "epochs": 2, "out": "a", "save": "straight"},
        {"name": "plain", "recipe": PLAIN, "epochs": 1, "out": "b"},
        {"name": "plain", "recipe": PLAIN, "epochs": 2, "out": "b", "resume": True, "save": "resumed"},
        {"name": "reg", "recipe": regressor_recipe(teacher), "epochs": 1, "out": "c", "save": "regressor"},
    ]}
    (tmp / "spec.json").write_text(json.dumps(spec))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]), OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "_ddp_worker.py"), str(tmp / "spec.json")]
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, sums


def _weights(tmp: Path, tag: str, rank: int) -> dict:
    return load_file(str(tmp / f"{tag}.rank{rank}.safetensors"))


@pytest.mark.parametrize("tag", ["straight", "resumed", "regressor"])
def test_ranks_hold_identical_weights(ddp_run, tag):
    tmp, _ = ddp_run
    r0, r1 = _weights(tmp, tag, 0), _weights(tmp, tag, 1)
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), f"{tag}: {k} differs between rank 0 and rank 1"


def test_two_ranks_equal_one_process_on_the_same_global_batches(ddp_run, monkeypatch):
    tmp, sums = ddp_run
    monkeypatch.setattr(D, "SHA256", {k: tuple(v) for k, v in sums.items()})
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    built = []
    create = loop.create_model

    def create_without_dropout(name, **kw):
        model = create(name, **kw)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        built.append(model)
        return model

    monkeypatch.setattr(loop, "create_model", create_without_dropout)
    D._load.cache_clear()
    try:
        loop.train(parse_recipe(PLAIN, name="plain"), data_dir=tmp / "data", out_dir=tmp / "single", epochs=2,
                   show_progress=False)
    finally:
        D._load.cache_clear()
    single = {k: v.detach() for k, v in built[-1].state_dict().items()}
    ddp = _weights(tmp, "straight", 0)
    torch.manual_seed(3)  # the recipe's seed: the weights both runs started from
    start = create("lightnn").state_dict()
    for k, v in single.items():
        assert not torch.equal(v, start[k]), f"{k} did not train"
        torch.testing.assert_close(ddp[k], v, rtol=1e-4, atol=1e-5, msg=lambda m: f"{k}: 2 ranks vs 1 process: {m}")


def test_resume_across_ranks_continues_where_it_stopped(ddp_run):
    tmp, _ = ddp_run
    straight, resumed = _weights(tmp, "straight", 0), _weights(tmp, "resumed", 0)
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=1e-5, atol=1e-6)
    # rank 0 alone wrote the outputs; the resumed run's checkpoint is the one the rank-0 weights give
    model, meta = load_checkpoint(tmp / "b" / "plain.json")
    assert meta["world_size"] == 2 and meta["epochs_run"] == 2 and meta["steps_run"] == 2 * N_TRAIN // BATCH
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, resumed[k])
    assert sorted(p.name for p in (tmp / "b").iterdir()) == ["plain.json", "plain.safetensors", "plain.work"]


def test_nproc_checks_inputs_before_launching_torchrun(tmp_path, capsys, monkeypatch):
    import subprocess as sp

    from cifar_speed import cli

    launched = []
    monkeypatch.setattr(sp, "call", lambda cmd, *a, **k: launched.append(cmd) or 0)
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert cli.main(["train", str(tmp_path / "missing.toml"), "--nproc", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.toml not found" in err[0] and not launched

    recipe = tmp_path / "r.toml"
    recipe.write_text(PLAIN)
    assert cli.main(["train", str(recipe), "--nproc", "2", "--data-dir", str(tmp_path / "nodata")]) == 2
    assert "CIFAR-10 not found" in capsys.readouterr().err and not launched

    data = tmp_path / "data"
    write_fake_cifar(data / D.FOLDER, n_train=20, n_test=10)
    assert cli.main(["train", str(recipe), "--nproc=2", "--epochs", "0.5", "--data-dir", str(data),
                     "--out", str(tmp_path / "o"), "--resume", "--no-progress"]) == 0
    (cmd,) = launched
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    args = cmd[7:]
    assert args[:2] == ["train", str(recipe)] and "--nproc" not in " ".join(args)
    assert {"--resume", "--no-progress"} <= set(args)
    assert args[args.index("--epochs") + 1] == "0.5" and args[args.index("--data-dir") + 1] == str(data)
