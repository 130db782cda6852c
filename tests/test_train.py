"""Training end to end on a small fake data set (real on-disk format), recipes and resume."""
import json
from pathlib import Path

import pytest
import torch

from cifar_speed.checkpoint import load_checkpoint
from cifar_speed.cli import main
from cifar_speed.errors import CifarSpeedError
from cifar_speed.train import load_recipe, parse_recipe
from cifar_speed.train.loop import train

from _infer_util import make_checkpoint

REPO = Path(__file__).resolve().parent.parent
RECIPES = sorted(p.stem for p in (REPO / "train").glob("*.toml"))


def test_a_recipe_for_every_result_of_the_report():
    assert {"mlp", "cnn", "mobilenetv3_small", "deepnn", "lightnn", "lightnn_kd", "lightnn_cosine",
            "lightnn_regressor", "fast"} <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipes_parse(name):
    r = load_recipe(REPO / "train" / f"{name}.toml")
    assert r.name == name


def test_tutorial_hyperparameters_are_kept():
    kd = load_recipe(REPO / "train" / "lightnn_kd.toml")
    assert (kd.distill.temperature, kd.distill.soft_weight, kd.distill.ce_weight) == (2.0, 0.25, 0.75)
    assert (kd.optim.name, kd.optim.lr, kd.data.batch_size, kd.train.epochs, kd.seed) == ("adam", 1e-3, 128, 10, 42)
    cnn = load_recipe(REPO / "train" / "cnn.toml")
    assert (cnn.data.split, cnn.train.early_stopping_patience, cnn.schedule.factor) == ("report", 10, 0.25)


@pytest.mark.parametrize("text,message", [
    ('model = "cnn"\nlearning_rate = 1', "unknown key"),
    ('model = "resnet"', "available: cnn"),
    ('model = "cnn"\n[optim]\nlr = "fast"', "must be a number"),
    ('model = "cnn"\n[optim]\nname = "lion"', "is not one of"),
    ('model = "cnn"\n[train]\nearly_stopping_patience = 3', "never the official test set"),
    ('model = "lightnn"\n[distill]\nkind = "kd"', "needs a teacher"),
    ('model = "fast"\n[distill]\nteacher_view = "view"', "teacher_view = 'view' needs a \\[distill\\] kind"),
    ('model = "fast"\n[distill]\nkind = "kd"\nteacher = "fast"\nteacher_view = "jpeg"', "is not one of"),
    ('model = "cnn"\n[data]\nbatch = 3', "valid: split"),
    ("model = ", "not valid TOML"),
    ('model = "fast"\n[train]\nwhiten_eps = 0', "whiten_eps"),
])
def test_bad_recipes_are_refused(text, message):
    with pytest.raises(CifarSpeedError, match=message):
        parse_recipe(text)


def test_a_recorded_recipe_gets_the_fields_added_since_at_their_defaults():
    from cifar_speed.train.recipe import Recipe, with_added_fields

    today = load_recipe(REPO / "train" / "fast.toml").to_dict()
    augment = {k: v for k, v in today["augment"].items() if not k.startswith("jpeg_")}
    recorded = {**{k: v for k, v in today.items() if k != "distill"}, "augment": augment}
    filled = with_added_fields(recorded)
    defaults = Recipe(model="fast").to_dict()
    assert filled["distill"] == defaults["distill"]     # a section added since: all its defaults
    assert list(filled["augment"]) == [*augment, "jpeg_fraction", "jpeg_quality_min", "jpeg_quality_max"]
    assert filled["augment"]["jpeg_fraction"] == defaults["augment"]["jpeg_fraction"] == 0
    assert with_added_fields(today) == today and "distill" not in recorded   # nothing to add; input untouched


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, _fake_cifar_folder):
    """One short deepnn teacher shared by the distillation tests (trained on the fake data)."""
    from cifar_speed import data as D

    root, sums = _fake_cifar_folder
    saved = D.SHA256
    D.SHA256 = sums
    D._load.cache_clear()
    try:
        out = tmp_path_factory.mktemp("teacher")
        train(load_recipe(REPO / "train" / "deepnn.toml"), data_dir=root, out_dir=out, epochs=0.1, show_progress=False)
    finally:
        D.SHA256 = saved
        D._load.cache_clear()
    return out


@pytest.mark.parametrize("name", RECIPES)
def test_every_recipe_trains_end_to_end(name, fake_data, tmp_path, teacher_dir):
    recipe = load_recipe(REPO / "train" / f"{name}.toml")
    if recipe.distill.kind:
        for f in teacher_dir.glob("deepnn.*"):
            if f.is_file():
                (tmp_path / f.name).write_bytes(f.read_bytes())
    if recipe.distill.teacher == "fast":
        # A small FastNet (frontier_s, with fast's TTA) stands in for the shipped fast teacher, found
        # first in the output folder: the real one's TTA logits over the fake training set took over
        # two minutes of CPU, for the same code path.
        make_checkpoint(tmp_path, name="frontier_s", stem="fast")
    sidecar = train(recipe, data_dir=fake_data, out_dir=tmp_path, epochs=0.1, show_progress=False)
    model, meta = load_checkpoint(sidecar)
    assert meta["name"] == name and 0 <= meta["test_accuracy"] <= 1
    assert meta["provenance"]["versions"]["torch"] == torch.__version__
    assert meta["recipe"]["model"] == meta["model"]
    # CPU training records its process CPU time beside wall time, and whether the cores were shared.
    assert meta["train_cpu_seconds"] > 0 and isinstance(meta["train_disturbed"], bool)
    assert meta["train_threads"] == torch.get_num_threads() and "cpu_wall_ratio" in meta["history"][-1]
    if recipe.distill.kind:
        assert meta["teacher"]["name"] == Path(recipe.distill.teacher).stem  # deepnn, or fast for the frontier


@pytest.mark.parametrize(("vendor", "features", "expected"), [
    ("GenuineIntel", ["avx512_bf16", "amx_bf16"], torch.bfloat16),   # AMX
    ("AuthenticAMD", ["avx512_bf16"], torch.bfloat16),               # Zen 4: bf16 steps ran faster
    ("GenuineIntel", ["avx512_bf16"], torch.float32),                # AMX hidden: every model's bf16 step ran slower
    ("AuthenticAMD", ["avx2"], torch.float32),
])
def test_auto_precision_trains_in_bf16_only_where_it_is_the_faster(monkeypatch, vendor, features, expected):
    from cifar_speed import provenance
    from cifar_speed.devices import resolve_precision

    monkeypatch.setattr(provenance, "cpu_info", lambda: {"vendor": vendor, "features": features})
    assert resolve_precision("auto", torch.device("cpu")) == expected
    assert resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16   # asked for: never overridden


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fast", "frontier_l", "lightnn"])
def test_training_on_cuda_end_to_end(name, fake_data, tmp_path):
    """The CUDA path of the loop (bf16 autocast, the teacher's logits on the GPU, JPEG augmentation of
    device batches, the final evaluation) on the fake data: the GPU sweep's models are trained there."""
    recipe = load_recipe(REPO / "train" / f"{name}.toml")
    if recipe.distill.teacher == "fast":
        make_checkpoint(tmp_path, name="frontier_s", stem="fast")
    sidecar = train(recipe, data_dir=fake_data, out_dir=tmp_path, device="cuda", epochs=0.2, show_progress=False)
    model, meta = load_checkpoint(sidecar)
    assert meta["device"].startswith("cuda") and 0 <= meta["test_accuracy"] <= 1
    if recipe.train.precision == "auto":
        assert meta["train_precision"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert "train_cpu_seconds" not in meta  # the CPU-load fields describe CPU runs only
    assert 0 <= meta["test_accuracy_jpeg75"] <= 1


@pytest.fixture
def no_shipped_teacher(monkeypatch, tmp_path):
    """Hide results/checkpoints so the teacher lookup cannot find the shipped deepnn."""
    from cifar_speed.train import teacher

    monkeypatch.setattr(teacher, "SHIPPED_DIR", tmp_path / "no-shipped-checkpoints")


def test_missing_teacher_is_trained_first(fake_data, tmp_path, no_shipped_teacher):
    text = (REPO / "train" / "lightnn_kd.toml").read_text()
    sidecar = train(parse_recipe(text, name="kd"), data_dir=fake_data, out_dir=tmp_path, epochs=0.05, show_progress=False)
    assert (tmp_path / "deepnn.json").is_file()
    assert json.loads(sidecar.read_text())["teacher"]["name"] == "deepnn"


def test_missing_teacher_without_recipe_is_an_error(fake_data, tmp_path, no_shipped_teacher):
    text = (REPO / "train" / "lightnn_kd.toml").read_text().replace('teacher_recipe = "train/deepnn.toml"', "")
    with pytest.raises(CifarSpeedError, match="teacher checkpoint 'deepnn' not found"):
        train(parse_recipe(text, name="kd"), data_dir=fake_data, out_dir=tmp_path, epochs=0.05, show_progress=False)


def test_training_flags_epochs_whose_cores_other_processes_used(fake_data, tmp_path, monkeypatch):
    """The machine's view (/proc/stat), as the benchmark harness reads it: other processes busy on our
    cores flag the epoch and the run, even where the process's own cpu/wall looks full."""
    from cifar_speed import harness

    busy = iter(range(0, 10**6, 1000))   # each reading: 1,000 more busy seconds than the last
    monkeypatch.setattr(harness, "read_cpu_counters", lambda *a, **k: harness.CpuCounters(float(next(busy)), 0.0, 2))
    sidecar = train(load_recipe(REPO / "train" / "lightnn.toml"), data_dir=fake_data, out_dir=tmp_path, epochs=1,
                    show_progress=False)
    meta = json.loads(sidecar.read_text())
    epoch = meta["history"][0]
    assert epoch["disturbed"] is True and epoch["others_cpu_s"] > 0 and "other processes" in epoch["why"]
    assert meta["train_disturbed"] is True and meta["train_disturbed_epochs"] == 1


def test_training_is_deterministic_and_resume_matches(fake_data, tmp_path):
    recipe = REPO / "train" / "lightnn.toml"
    full = train(load_recipe(recipe), data_dir=fake_data, out_dir=tmp_path / "a", epochs=2, show_progress=False)
    again = train(load_recipe(recipe), data_dir=fake_data, out_dir=tmp_path / "b", epochs=2, show_progress=False)
    # interrupted after one epoch, then resumed for the second
    train(load_recipe(recipe), data_dir=fake_data, out_dir=tmp_path / "c", epochs=1, show_progress=False)
    resumed = train(load_recipe(recipe), data_dir=fake_data, out_dir=tmp_path / "c", epochs=2, resume=True,
                    show_progress=False)
    ref = load_checkpoint(full)[0].state_dict()
    for other in (again, resumed):
        for k, v in load_checkpoint(other)[0].state_dict().items():
            assert torch.equal(v, ref[k]), k
    meta = json.loads(resumed.read_text())
    assert meta["epochs_run"] == 2 and len(meta["history"]) == 2


def test_early_stopping_restores_best(fake_data, tmp_path):
    # lr 1.0 makes the validation loss jump after the first epoch, so patience 1 stops at epoch 2
    text = ('model = "lightnn"\n[data]\nsplit = "report"\n[optim]\nlr = 1.0\n'
            '[train]\nepochs = 6\nearly_stopping_patience = 1\n')
    meta = json.loads(train(parse_recipe(text, name="es"), data_dir=fake_data, out_dir=tmp_path, show_progress=False).read_text())
    assert meta["early_stopped"] and meta["epochs_run"] < 6
    assert meta["best_epoch"] == meta["epochs_run"] - 1
    assert meta["best_val_loss"] == min(h["val_loss"] for h in meta["history"])
    assert "report_split_test_accuracy" in meta


# -- the command line: bad input gives one line and exit status 2, nothing written ---------------

def run_cli(capsys, *argv):
    rc = main(list(argv))
    err = capsys.readouterr().err.strip()
    return rc, err


def test_cli_train_and_eval(fake_data, tmp_path, capsys):
    rc, _ = run_cli(capsys, "train", str(REPO / "train" / "lightnn.toml"), "--epochs", "0.2", "--data-dir", str(fake_data),
                    "--out", str(tmp_path), "--no-progress")
    assert rc == 0
    rc = main(["eval", str(tmp_path / "lightnn.json"), "--data-dir", str(fake_data), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["images"] == 500 and sum(map(sum, out["confusion_matrix"])) == 500
    assert out["accuracy"] == pytest.approx(out["recorded_accuracy"])


def test_cli_epoch_lines_are_not_wrapped_in_a_log(fake_data, tmp_path, capsys):
    """Piped to a log file, each epoch stays one line (rich's own console would wrap it at 80 columns)."""
    text = (REPO / "train" / "lightnn.toml").read_text().replace('split = "official"', 'split = "holdout"\nval_size = 100')
    (tmp_path / "holdout.toml").write_text(text)
    assert main(["train", str(tmp_path / "holdout.toml"), "--epochs", "0.2", "--data-dir", str(fake_data),
                 "--out", str(tmp_path), "--no-progress"]) == 0
    epoch_lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("epoch")]
    assert len(epoch_lines) == 1 and "val_acc" in epoch_lines[0] and len(epoch_lines[0]) > 80


@pytest.mark.parametrize("args,message", [
    (["train", "train/cnn.toml", "--data-dir", "/nonexistent"], "CIFAR-10 not found"),
    (["train", "train/cnn.toml", "--device", "cuda"], "no CUDA GPU"),
    (["train", "train/nothing.toml"], "recipe train/nothing.toml not found"),
    (["train", "train/cnn.toml", "--epochs", "-1"], "--epochs = -1.0: must be"),
    (["eval", "missing.json"], "not found"),
])
def test_cli_bad_input(args, message, capsys, tmp_path, monkeypatch):
    if torch.cuda.is_available() and "cuda" in args:
        pytest.skip("this machine has CUDA")
    monkeypatch.chdir(REPO)
    rc, err = run_cli(capsys, *args, "--out" if args[0] == "train" else "--device", str(tmp_path) if args[0] == "train" else "cpu")
    assert rc == 2
    assert err.startswith("cifar-speed: error:") and message in err and "\n" not in err
    assert not any(tmp_path.iterdir())  # nothing written


def test_cli_corrupt_data_and_foreign_checkpoint(fake_data, tmp_path, capsys):
    bad = tmp_path / "data" / "cifar-10-batches-py"
    bad.mkdir(parents=True)
    for f in (fake_data / "cifar-10-batches-py").iterdir():
        (bad / f.name).write_bytes(f.read_bytes()[:1000])
    rc, err = run_cli(capsys, "train", str(REPO / "train" / "lightnn.toml"), "--data-dir", str(bad.parent),
                      "--out", str(tmp_path / "out"))
    assert rc == 2 and "truncated" in err and not (tmp_path / "out" / "lightnn.json").exists()
    run_cli(capsys, "train", str(REPO / "train" / "lightnn.toml"), "--epochs", "0.1", "--data-dir", str(fake_data),
            "--out", str(tmp_path), "--no-progress")
    rc, err = run_cli(capsys, "eval", str(tmp_path / "lightnn.json"), "--model", "cnn", "--data-dir", str(fake_data))
    assert rc == 2 and "is a 'lightnn' checkpoint, not 'cnn'" in err


def test_unknown_device_is_argparse_one_line_exit_2(capsys):
    from cifar_speed.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", "train/cnn.toml", "--device", "tpu"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "invalid choice: 'tpu'" in err and "Traceback" not in err


def test_evaluate_reports_progress_after_each_batch(fake_data):
    """`eval` shows 'N / M images' while it runs: evaluate calls back after every batch."""
    import math

    from cifar_speed import data as D
    from cifar_speed.console import status_count
    from cifar_speed.evaluation import evaluate
    from cifar_speed.models import create_model

    split = D.load_split("test", fake_data)
    seen = []
    evaluate(create_model("lightnn"), split, D.CIFAR_MEAN, D.CIFAR_STD, "cpu", batch_size=200,
             on_batch=lambda done, total: seen.append((done, total)))
    assert len(seen) == math.ceil(len(split) / 200) and seen[-1] == (len(split), len(split))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    status_count(1, 2)   # no step running (and no terminal): nothing to update, no error


# -- fine-tuning: [init] ---------------------------------------------------------------------------

def _finetune_recipe(sidecar: Path, sha: str, model: str = "lightnn") -> str:
    return (f'model = "{model}"\n[init]\ncheckpoint = "{sidecar}"\nweights_sha256 = "{sha}"\n'
            '[optim]\nlr = 1e-9\n[data]\nbatch_size = 16\n')


def test_a_fine_tuning_run_starts_from_its_checkpoint(fake_data, tmp_path):
    start = make_checkpoint(tmp_path / "start", seed=3)
    sha = json.loads(start.read_text())["weights_sha256"]
    recipe = parse_recipe(_finetune_recipe(start, sha), name="ft")
    from cifar_speed.train.finetune import load_start
    from cifar_speed.train.loop import build_model, load_data

    model, _ = build_model(recipe, load_data(recipe, fake_data), torch.device("cpu"), load_start(recipe))
    expected, _ = load_checkpoint(start)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), expected.state_dict().values()))
    fresh, _ = build_model(recipe.__class__(model="lightnn", seed=recipe.seed), load_data(recipe, fake_data), torch.device("cpu"))
    assert not all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), expected.state_dict().values()))

    sidecar = train(recipe, data_dir=fake_data, out_dir=tmp_path, epochs=0.05, show_progress=False)
    meta = json.loads(sidecar.read_text())
    assert meta["fine_tuned_from"]["weights_sha256"] == sha and meta["fine_tuned_from"]["checkpoint"] == start.name
    assert meta["recipe"]["init"] == {"checkpoint": str(start), "weights_sha256": sha}


def test_a_fine_tuning_run_refuses_other_weights(fake_data, tmp_path):
    start = make_checkpoint(tmp_path, seed=3)
    with pytest.raises(CifarSpeedError, match=r"\[init\] .* holds weights .* not the 000000000000"):
        train(parse_recipe(_finetune_recipe(start, "0" * 64), name="ft"), data_dir=fake_data, out_dir=tmp_path,
              epochs=0.05, show_progress=False)
    with pytest.raises(CifarSpeedError, match=r"\[init\] checkpoint .* not found"):
        train(parse_recipe(_finetune_recipe(tmp_path / "none.json", "0" * 64), name="ft"), data_dir=fake_data,
              out_dir=tmp_path, epochs=0.05, show_progress=False)
    sha = json.loads(start.read_text())["weights_sha256"]
    with pytest.raises(CifarSpeedError, match="is a 'lightnn' checkpoint, not 'cnn'"):
        train(parse_recipe(_finetune_recipe(start, sha, model="cnn"), name="ft"), data_dir=fake_data,
              out_dir=tmp_path, epochs=0.05, show_progress=False)


@pytest.mark.parametrize("init,message", [
    ('checkpoint = "x.json"', "needs both checkpoint and weights_sha256"),
    ('weights_sha256 = "' + "a" * 64 + '"', "needs both checkpoint and weights_sha256"),
    ('checkpoint = "x.json"\nweights_sha256 = "abc"', "64 lowercase hex digits"),
])
def test_bad_init_sections_are_refused(init, message):
    with pytest.raises(CifarSpeedError, match=message):
        parse_recipe(f'model = "cnn"\n[init]\n{init}')


def test_a_teacher_path_is_found_from_any_working_folder(tmp_path, monkeypatch):
    """[distill] teacher as a path resolves against the working folder and else the repository, as
    [init] checkpoint and [distill] teacher_recipe do."""
    from cifar_speed.train.teacher import find_teacher

    monkeypatch.chdir(tmp_path)
    recipe = parse_recipe('model = "lightnn"\n[distill]\nkind = "kd"\nteacher = "results/checkpoints/deepnn.json"')
    assert find_teacher(recipe, tmp_path) == REPO / "results" / "checkpoints" / "deepnn.json"


def _pinned(sha: str, teacher: str = "deepnn") -> str:
    return f'model = "lightnn"\n[distill]\nkind = "kd"\nteacher = "{teacher}"\nteacher_sha256 = "{sha}"\n'


@pytest.mark.parametrize("text, message", [
    (_pinned("abc"), "teacher_sha256 must be 64 lowercase hex digits"),
    ('model = "lightnn"\n[distill]\nteacher_sha256 = "' + "a" * 64 + '"\n', "pins the weights of a teacher the recipe does not name"),
    (_pinned("a" * 64) + 'ensemble = ["fast"]\n', r"ensemble names 1 teacher\(s\) but ensemble_sha256 pins 0"),
    (_pinned("a" * 64) + 'ensemble = ["fast"]\nensemble_sha256 = ["abc"]\n', "ensemble_sha256 must be 64 lowercase hex"),
    (_pinned("a" * 64) + 'ensemble = "fast"\n', r"ensemble must be a list of strings, got 'fast'"),
    (_pinned("a" * 64) + 'ensemble = ["fast", 3]\n', "ensemble must be a list of strings"),
    (_pinned("a" * 64).replace('"kd"', '"cosine"') + 'ensemble = ["x"]\nensemble_sha256 = ["' + "a" * 64 + '"]\n',
     "ensemble needs kind = 'kd' and teacher_view = 'stored'"),
    (_pinned("a" * 64) + 'teacher_view = "view"\nensemble = ["x"]\nensemble_sha256 = ["' + "a" * 64 + '"]\n',
     "ensemble needs kind = 'kd' and teacher_view = 'stored'"),
])
def test_bad_teacher_pins_are_refused(text, message):
    with pytest.raises(CifarSpeedError, match=message):
        parse_recipe(text)


def test_a_pinned_teacher_is_the_checkpoint_holding_its_weights_even_after_a_newer_one_ships(tmp_path, monkeypatch):
    """A newer `deepnn` in --out and in results/checkpoints is passed over for the pinned weights,
    kept in results/checkpoints/bases/ under another name; unpinned, the name decides."""
    from cifar_speed.checkpoint import read_sidecar
    from cifar_speed.train import teacher

    shipped, out = tmp_path / "shipped", tmp_path / "out"
    monkeypatch.setattr(teacher, "SHIPPED_DIR", shipped)
    newer = make_checkpoint(shipped, "deepnn", seed=1)
    mine = make_checkpoint(out, "deepnn", seed=2)
    first = make_checkpoint(shipped / "bases", "deepnn", seed=0, stem="deepnn-first")
    sha = lambda p: read_sidecar(p).weights_sha256  # noqa: E731
    assert len({sha(newer), sha(mine), sha(first)}) == 3
    assert teacher.find_teacher(parse_recipe(_pinned(sha(first))), out) == first
    assert teacher.find_teacher(parse_recipe(_pinned(sha(newer))), out) == newer
    assert teacher.find_teacher(parse_recipe('model = "lightnn"\n[distill]\nkind = "kd"\nteacher = "deepnn"\n'), out) == mine
    # Pinned weights nowhere: an error naming them, never a teacher trained over the ones present.
    retrain = _pinned("0" * 64) + 'teacher_recipe = "train/deepnn.toml"\n'
    with pytest.raises(CifarSpeedError, match=r"no teacher checkpoint holds the weights 000000000000\.\.\. "):
        teacher.find_teacher(parse_recipe(retrain), out)
    monkeypatch.setattr(teacher, "SHIPPED_DIR", tmp_path / "none")
    with pytest.raises(CifarSpeedError, match=r"'deepnn' with weights 000000000000\.\.\. \(\[distill\] teacher_sha256\) not found"):
        teacher.find_teacher(parse_recipe(_pinned("0" * 64)), tmp_path / "empty")
    assert teacher.find_teacher(parse_recipe(retrain), tmp_path / "empty") is None   # trained from its recipe


def test_a_teacher_trained_from_its_recipe_must_still_be_the_pinned_one(fake_data, tmp_path, no_shipped_teacher):
    text = (REPO / "train" / "lightnn_kd.toml").read_text().replace(
        'teacher = "deepnn"', 'teacher = "deepnn"\nteacher_sha256 = "' + "0" * 64 + '"')
    assert "teacher_sha256" in text
    with pytest.raises(CifarSpeedError, match=r"the teacher holds weights [0-9a-f]{12}\.\.\., not the 000000000000\.\.\."):
        train(parse_recipe(text, name="kd"), data_dir=fake_data, out_dir=tmp_path, epochs=0.05, show_progress=False)


def test_every_recipe_distilled_from_fast_pins_the_teacher_its_committed_runs_had():
    from cifar_speed.checkpoint import read_sidecar

    first = read_sidecar(REPO / "results" / "checkpoints" / "bases" / "fast-airbench94.json").weights_sha256
    recipes = [load_recipe(p) for p in sorted((REPO / "train").rglob("*.toml"))]
    from_fast = [r for r in recipes if r.distill.teacher == "fast"]
    assert from_fast and {r.distill.teacher_sha256 for r in from_fast} == {first}
