"""The training loop, one recipe at a time: data -> model -> teacher -> epochs -> checkpoint.

Runs single-process or under torchrun (DistributedDataParallel: gloo on CPU, nccl on CUDA; each
rank takes its slice of every global batch, rank 0 alone writes). Every epoch ends with an atomic
resume point (weights, optimiser and RNG state committed as one set, resume.py), so `--resume` loses at
most one epoch and never pairs one epoch's weights with another's optimiser.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from .. import data as D
from .. import harness
from ..checkpoint import load_checkpoint, paths_for
from ..console import make_console
from ..devices import autocast, resolve_device, resolve_precision
from ..errors import CifarSpeedError
from ..evaluation import evaluate
from ..models import create_model
from . import resume as resume_store
from .finetune import StartPoint, load_start
from .finish import save_final
from .objectives import Objective, make_objective
from .optim import Lookahead, build_optimizer, build_schedule
from .recipe import Recipe, load_recipe
from .state import TrainingState
from .teacher import TeacherTargets, check_pin, find_ensemble, find_teacher, prepare_teacher, targets_for, teacher_recipe_path

NORMALIZATION = {"cifar": (D.CIFAR_MEAN, D.CIFAR_STD), "imagenet": (D.IMAGENET_MEAN, D.IMAGENET_STD)}


def train(recipe: Recipe, *, data_dir=None, device: str = "cpu", out_dir: str | Path = "runs",
          epochs: float | None = None, resume: bool = False, show_progress: bool = True) -> Path:
    """Train one recipe; returns the path of the final checkpoint's sidecar (`<out>/<name>.json`)."""
    dev = resolve_device(device)
    ddp = init_distributed(dev)
    dtype = resolve_precision(recipe.train.precision, dev)
    out_dir = Path(out_dir)
    epochs = float(epochs if epochs is not None else recipe.train.epochs)
    if epochs <= 0:
        raise CifarSpeedError("--epochs must be positive")
    data = load_data(recipe, data_dir)
    start = load_start(recipe)
    model, channels_last = build_model(recipe, data, dev, start)

    # The teacher comes after the student is built: a teacher trained here advances the global RNG
    # that the student's dropout then draws from, and moving it would change every distilled run.
    objective = make_objective(recipe, ddp.world_size)
    teacher_meta, targets = None, None
    if objective.distills:
        objective.check_student(recipe.model)
        members = find_ensemble(recipe, out_dir)   # before a teacher trains: a missing member fails at once
        teacher, teacher_meta = ensure_teacher(recipe, out_dir, data_dir=data_dir, device=device,
                                               epochs=epochs if epochs != recipe.train.epochs else None,
                                               show_progress=show_progress)
        teacher = prepare_teacher(teacher, teacher_meta, recipe, objective, dev, data.mean)
        ensemble = [(prepare_teacher(m, m_meta, recipe, objective, dev, data.mean), m_meta)
                    for m, m_meta in map(load_checkpoint, members)]
        targets = targets_for(teacher, teacher_meta, recipe, objective, data.train, data.mean, data.std, dev, dtype,
                              data.augmenting, _status_line(ddp.main), ensemble)
        if ensemble:
            teacher_meta = {**teacher_meta, "ensemble": [m_meta for _, m_meta in ensemble]}
    objective.build(recipe.seed, dev)

    steps_per_epoch = math.ceil(len(data.train) / recipe.data.batch_size)
    run = Run(recipe, dev, dtype, ddp, data, out_dir, epochs, channels_last, objective, targets, teacher_meta,
              steps_per_epoch, total_steps=max(1, round(epochs * steps_per_epoch)),
              start=start.record() if start is not None else None)
    st = start_state(run, model)
    _open_work(run, st, resume)

    bar = _progress(show_progress and ddp.main)  # rank 0 alone reports
    task = bar.add_task(recipe.name, total=run.total_steps, completed=st.progress["step"], info="")
    with bar:
        for epoch in range(st.progress["epoch"], run.n_epochs):
            if not _epoch(run, st, epoch, bar, task):
                break
    return _finish(run, st)


# -- setup -------------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (RANK / WORLD_SIZE in the environment), if any."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if device.type == "cuda":  # before the NCCL group forms, so each rank binds its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


@dataclass
class Data:
    """A recipe's splits, its normalisation and its per-batch augmentations."""
    train: D.Split
    val: D.Split | None
    report_test: D.Split | None
    test: D.Split
    mean: tuple
    std: tuple
    augment: D.Augment
    augmenting: bool
    jpeg: D.JpegAugment


def make_splits(recipe: Recipe, data_dir) -> tuple[D.Split, D.Split | None, D.Split | None]:
    """(train, validation or None, the report's own 10 % 'test' or None). The official test set is
    never used for any training decision."""
    full = D.load_split("train", data_dir)
    if recipe.data.split == "report":
        return D.report_split(full, recipe.data.split_seed)
    if recipe.data.split == "holdout":
        tr, val = D.holdout(full, recipe.data.val_size, recipe.data.split_seed)
        return tr, val, None
    return full, None, None


def load_data(recipe: Recipe, data_dir) -> Data:
    mean, std = NORMALIZATION[recipe.data.normalize]
    train_split, val_split, report_test = make_splits(recipe, data_dir)
    test_split = D.load_split("test", data_dir)
    a = recipe.augment
    aug = D.Augment(flip=a.flip, translate=a.translate, rotate_degrees=a.rotate_degrees,
                    shift_fraction=a.shift_fraction, cutout=a.cutout)
    augmenting = aug.flip or aug.translate or aug.rotate_degrees or aug.shift_fraction or aug.cutout or a.alternating_flip
    jpeg = D.JpegAugment(a.jpeg_fraction, a.jpeg_quality_min, a.jpeg_quality_max)
    return Data(train_split, val_split, report_test, test_split, mean, std, aug, augmenting, jpeg)


def build_model(recipe: Recipe, data: Data, device: torch.device, start: StartPoint | None = None) -> tuple[nn.Module, bool]:
    """The recipe's model on the device, and whether it runs channels_last (conv nets, if the recipe asks).
    Seeded right before it is built, as the tutorial does, so inits match across runs; a fine-tuning
    recipe's model holds its starting checkpoint's weights instead (whitening included)."""
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model)
    if start is not None:
        model.load_state_dict(start.model.state_dict())
    elif hasattr(model, "init_whitening"):
        model.init_whitening(D.normalize(data.train.images[:5000], data.mean, data.std), eps=recipe.train.whiten_eps)
    model = model.to(device)
    channels_last = recipe.train.channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, channels_last


def ensure_teacher(recipe: Recipe, out_dir: Path, **train_kwargs) -> tuple[nn.Module, dict]:
    """A distilled run's prerequisite: the teacher checkpoint (teacher.find_teacher). When it is missing
    and the recipe names a teacher recipe, that recipe is trained first, as a whole run of its own
    into the same --out with the same device, epochs and progress display."""
    found = find_teacher(recipe, out_dir)
    if found is None:
        found = train(load_recipe(teacher_recipe_path(recipe)), out_dir=out_dir, **train_kwargs)
    teacher, meta = load_checkpoint(found)
    check_pin(recipe, meta)
    return teacher, meta


@dataclass
class Run:
    """What stays fixed while a recipe trains: where, in which precision, on which data, towards what."""
    recipe: Recipe
    device: torch.device
    dtype: torch.dtype
    ddp: Dist
    data: Data
    out_dir: Path
    epochs: float
    channels_last: bool
    objective: Objective
    targets: TeacherTargets | None  # the teacher's side of each batch, for distilled runs
    teacher_meta: dict | None
    steps_per_epoch: int
    total_steps: int
    start: dict | None = None  # a fine-tuning run's starting checkpoint (finetune.StartPoint.record)
    student: nn.Module | None = None  # what a step calls: the model, or the objective's wrapper, under DDP if distributed
    sched_unit: str = "none"
    scaler: torch.amp.GradScaler | None = None
    alpha_schedule: torch.Tensor | None = None  # lookahead's decay at each step
    flip_base: torch.Tensor | None = None  # alternating flip's first-epoch mask

    @property
    def n_epochs(self) -> int:
        return math.ceil(self.total_steps / self.steps_per_epoch)

    @property
    def work(self) -> Path:
        return self.out_dir / f"{self.recipe.name}.work"


def start_state(run: Run, model: nn.Module) -> TrainingState:
    """The optimiser, schedule and lookahead of a fresh run; completes `run` with the step's fixed parts."""
    recipe = run.recipe
    optimizer = build_optimizer(recipe, model, run.objective.extra_params())
    scheduler, run.sched_unit = build_schedule(recipe, optimizer, run.total_steps)
    lookahead = Lookahead(model) if recipe.train.lookahead_every else None
    run.alpha_schedule = 0.95**5 * (torch.arange(run.total_steps + 1) / run.total_steps) ** 3
    run.scaler = torch.amp.GradScaler("cuda") if run.dtype == torch.float16 else None
    run.student = run.objective.student(model)
    if run.ddp.world_size > 1:
        run.student = nn.parallel.DistributedDataParallel(run.student)
    gen = torch.Generator().manual_seed(recipe.seed)
    run.flip_base = torch.rand(len(run.data.train), generator=gen) < 0.5  # drawn even without alternating flip
    return TrainingState(model, optimizer, scheduler, run.objective.regressor, lookahead, gen)


def _open_work(run: Run, st: TrainingState, resume: bool) -> None:
    """Clear what a killed save left in the work folder; with --resume, continue from its newest good epoch."""
    if run.ddp.main:
        resume_store.remove_stale(run.work)
    if not resume:
        return
    point = resume_store.latest(run.work, say=print if run.ddp.main else (lambda _: None))
    if point is not None:
        st.restore(point, run.recipe)
    elif run.ddp.main:
        print(f"no checkpoint to resume in {run.work}; starting from scratch")


# -- the epochs --------------------------------------------------------------------------------------

def _epoch(run: Run, st: TrainingState, epoch: int, bar, task) -> bool:
    """Train one epoch, validate, record it and save the resume point; False when early stopping ends the run."""
    record = _train_epoch(run, st, epoch, bar, task)
    stop = _validate(run, st, epoch, record) if run.data.val is not None else False
    st.progress["history"].append(record)
    st.progress["epoch"] = epoch + 1
    if run.ddp.main:
        bar.console.print(_epoch_line(record))
        st.save(run.work, run.recipe)
    if stop:
        st.progress["early_stopped"] = True
        if run.ddp.main:
            bar.console.print(f"early stop after epoch {epoch + 1}: no val-loss improvement for "
                              f"{run.recipe.train.early_stopping_patience} epochs; restoring epoch {st.progress['best_epoch']}")
    return not stop


def _train_epoch(run: Run, st: TrainingState, epoch: int, bar, task) -> dict:
    model, p, recipe, world = st.model, st.progress, run.recipe, run.ddp.world_size
    model.train()
    if recipe.train.whiten_bias_epochs and hasattr(model, "whiten"):
        model.whiten.bias.requires_grad = epoch < recipe.train.whiten_bias_epochs
    t0, cpu0, seen, correct, loss_sum = time.perf_counter(), time.process_time(), 0, 0, 0.0
    # (single process only: DDP's other ranks would count as "other processes")
    counters0 = harness.read_cpu_counters() if run.device.type == "cpu" and world == 1 else None
    flip_mask = run.flip_base ^ bool(epoch % 2) if recipe.augment.alternating_flip else None
    for idx, x, y in D.batches(run.data.train, recipe.data.batch_size, run.data.mean, run.data.std, augment=None,
                               shuffle=True, gen=st.generator, device=run.device, rank=run.ddp.rank, world_size=world):
        if p["step"] >= run.total_steps:
            break
        x, teacher_view = _augment(run, x, idx, flip_mask, st.generator)
        logits, loss = _step(run, st, x, y, idx, teacher_view)
        with torch.no_grad():
            seen += len(y)
            correct += (logits.argmax(1) == y).sum().item()
            # Per-sample mean over the epoch, whatever the reduction: a summed loss is this rank's
            # batch total times the world size (objectives.Objective.summed).
            loss_sum += loss.item() / world if run.objective.summed else loss.item() * len(y)
        elapsed = time.perf_counter() - t0
        bar.update(task, advance=1, info=f"epoch {epoch + 1}/{run.n_epochs}  loss {loss_sum / seen:.3f}  "
                   f"acc {correct / seen:.3f}  {seen * world / elapsed:,.0f} img/s")
    if st.lookahead is not None and p["step"] >= run.total_steps:
        st.lookahead.update(model, decay=1.0)  # the last step ends on the averaged weights
    epoch_s, epoch_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
    p["train_seconds"] += epoch_s
    # Process CPU time beside wall time, and the machine's view (/proc/stat: other processes' CPU
    # and steal on our cores), as the benchmark harness judges a trial: a CPU run that shared its
    # cores is flagged in the sidecar. The process view alone missed a test suite running beside a
    # 2-thread training run (its cpu/wall stayed above the threshold while its epochs took twice as long).
    p["train_cpu_seconds"] = p.get("train_cpu_seconds", 0.0) + epoch_cpu_s
    machine = {}
    if counters0 is not None:
        d = harness.judge(epoch_s, epoch_cpu_s, torch.get_num_threads(), counters0, harness.read_cpu_counters())
        p["train_disturbed_epochs"] = p.get("train_disturbed_epochs", 0) + bool(d.disturbed)
        machine = {"others_cpu_s": round(d.others_cpu_s, 1) if d.others_cpu_s is not None else None,
                   "disturbed": d.disturbed, **({"why": d.why} if d.why else {})}
    p["images"] += seen * world
    return {"epoch": epoch + 1, "step": p["step"], "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1), "lr": st.optimizer.param_groups[-1]["lr"],
            "seconds": round(epoch_s, 2), "images_per_s": round(seen * world / epoch_s, 1),
            "cpu_wall_ratio": round(epoch_cpu_s / epoch_s, 2), **machine}


def _augment(run: Run, x: torch.Tensor, idx: torch.Tensor, flip_mask, gen: torch.Generator):
    """(the student's batch, the teacher's: the same flips and crops before JPEG where the recipe's
    [distill] teacher_view = "view", else None)."""
    data = run.data
    if flip_mask is not None:
        x = torch.where(flip_mask[idx].to(run.device).view(-1, 1, 1, 1), x.flip(-1), x)
    if data.augmenting:
        x = data.augment(x, gen)
    view = x if run.recipe.distill.teacher_view == "view" else None
    x = data.jpeg(x, data.mean, data.std, gen)   # a new tensor where it compresses: `view` stays clean
    if run.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        view = view.contiguous(memory_format=torch.channels_last) if view is not None else None
    return x, view


def _step(run: Run, st: TrainingState, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
          teacher_view: torch.Tensor | None = None):
    """One optimiser step on one batch; returns (fp32 logits, loss)."""
    with autocast(run.device, run.dtype):
        out = run.student(x)
        teacher_out = run.targets(idx, y, teacher_view) if run.targets is not None else None
        logits, loss = run.objective.loss(out, teacher_out, y)
    st.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.step(st.optimizer)
        run.scaler.update()
    else:
        loss.backward()
        st.optimizer.step()
    st.progress["step"] += 1
    if run.sched_unit == "step":
        st.scheduler.step()
    if st.lookahead is not None and st.progress["step"] % run.recipe.train.lookahead_every == 0:
        st.lookahead.update(st.model, decay=run.alpha_schedule[st.progress["step"]].item())
    return logits, loss


def _validate(run: Run, st: TrainingState, epoch: int, record: dict) -> bool:
    """Validation loss and accuracy into `record`; the plateau schedule and early stopping follow the
    loss. True when early stopping ends the run."""
    p, patience = st.progress, run.recipe.train.early_stopping_patience
    val = evaluate(st.model, run.data.val, run.data.mean, run.data.std, run.device, run.dtype,
                   channels_last=run.channels_last)
    record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
    if run.sched_unit == "epoch":
        st.scheduler.step(val["loss"])
    if val["loss"] < p["best_val_loss"]:
        p["best_val_loss"], p["bad_epochs"] = val["loss"], 0
        p["best_epoch"], p["best_val_accuracy"] = epoch + 1, val["accuracy"]
        st.best_state = copy.deepcopy(st.model.state_dict()) if patience else None
        return False
    p["bad_epochs"] += 1
    return bool(patience) and p["bad_epochs"] >= patience


def _finish(run: Run, st: TrainingState) -> Path:
    """Back to the best epoch's weights if early stopping kept them; rank 0 writes the checkpoint."""
    if st.best_state is not None:
        st.model.load_state_dict(st.best_state)
    if run.ddp.world_size > 1:
        dist.barrier()
    sidecar = paths_for(run.out_dir / run.recipe.name)[1]
    if run.ddp.main:
        sidecar = save_final(run, st.model, st.progress)
    if run.ddp.world_size > 1:
        dist.barrier()
    return sidecar


def _epoch_line(r: dict) -> str:
    s = (f"epoch {r['epoch']:>3}  loss {r['train_loss']:.4f}  acc {r['train_accuracy']:.4f}  "
         f"lr {r['lr']:.2e}  {r['images_per_s']:,.0f} img/s  {r['seconds']:.1f}s")
    if "val_accuracy" in r:
        s += f"  val_loss {r['val_loss']:.4f}  val_acc {r['val_accuracy']:.4f}"
    return s


def _status_line(enabled: bool):
    """Where a one-off status line goes (rank 0 alone): stderr, as written (no markup), a path never broken."""
    console = make_console(stderr=True)
    return lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True) if enabled else None


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False,
                    # the command's console: piped to a log, rich's own would wrap each epoch line at 80 columns
                    console=make_console())
