import math

import pytest
import torch

from cifar_speed.train import distill


def test_soft_target_loss_by_hand():
    s = torch.tensor([[1.0, 0.0, -1.0]])
    t = torch.tensor([[3.0, 0.0, 1.0]])
    T = 2.0
    p = [math.exp(v / T) for v in t[0].tolist()]
    p = [v / sum(p) for v in p]
    q = [math.exp(v / T) for v in s[0].tolist()]
    q = [v / sum(q) for v in q]
    kl = sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    assert math.isclose(distill.soft_target_loss(s, t, T).item(), kl * T * T, rel_tol=1e-5)
    assert distill.soft_target_loss(t, t, T).item() < 1e-6


def test_kd_loss_weights():
    s, t, y = torch.randn(4, 10), torch.randn(4, 10), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    expected = 0.25 * distill.soft_target_loss(s, t, 2.0) + 0.75 * ce
    assert torch.allclose(distill.kd_loss(s, t, y, 2.0, 0.25, 0.75), expected)


def test_cosine_loss_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 1.0], [2.0, 2.0]])
    logits, y = torch.zeros(2, 3), torch.tensor([0, 1])
    # 1 - cos: first pair orthogonal (1), second parallel (0); mean 0.5. CE of uniform logits: log 3.
    expected = 0.25 * 0.5 + 0.75 * math.log(3)
    assert math.isclose(distill.cosine_loss(logits, a, b, y).item(), expected, rel_tol=1e-6)


def test_regressor_loss_by_hand():
    r = distill.Regressor()
    fmap = torch.zeros(2, 16, 8, 8)
    out = r(fmap)
    assert out.shape == (2, 32, 8, 8)
    target = torch.ones(2, 32, 8, 8)
    logits, y = torch.zeros(2, 4), torch.tensor([1, 2])
    mse = ((out - target) ** 2).mean()
    expected = 0.25 * mse + 0.75 * math.log(4)
    assert torch.allclose(distill.regressor_loss(logits, out, target, y), expected)


def test_kd_loss_matches_a_hand_computation():
    """0.7 * T^2 * KL(softmax(t/T) || softmax(s/T)) + 0.3 * CE, on numbers small enough to do by hand."""
    import math

    from cifar_speed.train.distill import kd_loss

    s = torch.tensor([[2.0, 0.0, 0.0]])
    t = torch.tensor([[0.0, 2.0, 0.0]])
    y = torch.tensor([0])
    T = 2.0
    ps = [math.exp(v / T) for v in (2.0, 0.0, 0.0)]
    pt = [math.exp(v / T) for v in (0.0, 2.0, 0.0)]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    kl = sum(q * math.log(q / p) for q, p in zip(pt, ps))
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + 2))
    expected = 0.7 * T * T * kl + 0.3 * ce
    got = kd_loss(s, t, y, temperature=T, soft_weight=0.7, ce_weight=0.3).item()
    assert abs(got - expected) < 1e-5


def _kd_student(fake_data, tmp_path, monkeypatch, distill: str):
    """One epoch of a frontier_s student distilled from an untrained FastNet teacher (a FastNet like
    `fast`, with the same TTA, at a test's cost) on the fake data, with `distill` added to [distill]."""
    from cifar_speed.checkpoint import save_checkpoint
    from cifar_speed.models import create_model
    from cifar_speed.train.loop import train
    from cifar_speed.train.recipe import parse_recipe

    monkeypatch.setenv("CIFAR_SPEED_CACHE", str(tmp_path / "cache"))
    save_checkpoint(tmp_path / "teacher", create_model("frontier_s"), {
        "model": "frontier_s", "name": "teacher", "normalize": {"mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616]}})
    recipe = parse_recipe(f"""
model = "frontier_s"
[data]
batch_size = 256
[train]
loss_reduction = "sum"
[augment]
translate = 2
jpeg_fraction = 0.5
[distill]
kind = "kd"
teacher = "{tmp_path / 'teacher.json'}"
{distill}
""", name="student")
    return train(recipe, data_dir=fake_data, out_dir=tmp_path / "out", epochs=1, show_progress=False)


def test_kd_trains_any_student_from_a_tta_teacher(fake_data, tmp_path, monkeypatch, capsys):
    """kd is not tied to deepnn/lightnn: a frontier student learns from a FastNet teacher with TTA, and
    the teacher's logits are cached once for every later run."""
    sidecar = _kd_student(fake_data, tmp_path, monkeypatch, "teacher_tta = 2")
    assert sidecar.is_file()
    cached = list((tmp_path / "cache" / "teacher-logits").glob("*-tta2-*.npy"))
    assert len(cached) == 1
    # The minutes a CPU spends on them come before any epoch line: said once, with where they are kept.
    said = capsys.readouterr().err
    assert said.count("teacher logits: teacher (TTA 2)") == 1 and str(cached[0]) in said
    import json

    meta = json.loads(sidecar.read_text())
    assert 0 <= meta["test_accuracy_jpeg75"] <= 1 and meta["recipe"]["distill"]["teacher_tta"] == 2
    # A summed kd loss is reported per sample, like a mean one (it read ~batch-size times too high).
    assert 0 < meta["history"][0]["train_loss"] < 20


def test_a_view_teacher_sees_the_students_flips_and_crops_before_jpeg():
    """[distill] teacher_view = "view": the teacher's batch is the student's after flip and crop, and the
    student's is that batch JPEG-compressed (every image, at fraction 1); "stored" hands no batch over."""
    from types import SimpleNamespace

    from cifar_speed import data as D
    from cifar_speed.train.loop import _augment

    images = torch.randint(0, 256, (8, 3, 32, 32), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    x, idx = D.normalize(images, mean, std), torch.arange(8)
    flip = torch.tensor([True, False] * 4)
    jpeg = D.JpegAugment(fraction=1.0, quality_min=60, quality_max=60)
    data = SimpleNamespace(augmenting=False, jpeg=jpeg, mean=mean, std=std)

    def run(view):
        return SimpleNamespace(data=data, device=torch.device("cpu"), channels_last=False,
                               recipe=SimpleNamespace(distill=SimpleNamespace(teacher_view=view)))
    student, teacher = _augment(run("view"), x, idx, flip, torch.Generator().manual_seed(1))
    flipped = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    assert torch.equal(teacher, flipped)
    assert torch.equal(student, jpeg(flipped, mean, std, torch.Generator().manual_seed(1)))
    assert not torch.equal(student, teacher)
    same_student, none = _augment(run("stored"), x, idx, flip, torch.Generator().manual_seed(1))
    assert none is None and torch.equal(same_student, student)


def test_kd_from_the_students_views_trains_and_caches_nothing(fake_data, tmp_path, monkeypatch):
    sidecar = _kd_student(fake_data, tmp_path, monkeypatch, 'teacher_view = "view"')
    import json

    assert json.loads(sidecar.read_text())["recipe"]["distill"]["teacher_view"] == "view"
    assert not (tmp_path / "cache" / "teacher-logits").exists()   # computed per step, never cached


def test_an_ensemble_teacher_averages_its_members_cached_logits(fake_data, tmp_path, monkeypatch):
    """[distill] ensemble: each further teacher, found by name or path and holding its pinned weights,
    gets its logits cached like the teacher's; the soft target is their mean; the sidecar names them."""
    import json

    from cifar_speed.checkpoint import load_checkpoint, read_sidecar, save_checkpoint
    from cifar_speed.data import CIFAR_MEAN, CIFAR_STD
    from cifar_speed.models import create_model
    from cifar_speed.train.objectives import make_objective
    from cifar_speed.train.recipe import parse_recipe
    from cifar_speed.train.teacher import cached_teacher_logits, targets_for

    from _infer_util import fake_split

    torch.manual_seed(1)
    member = save_checkpoint(tmp_path / "member", create_model("frontier_s"), {
        "model": "frontier_s", "name": "member", "normalize": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}})
    sha = read_sidecar(member).weights_sha256
    sidecar = _kd_student(fake_data, tmp_path, monkeypatch,
                          f'teacher_tta = 1\nensemble = ["{member}"]\nensemble_sha256 = ["{sha}"]')
    meta = json.loads(sidecar.read_text())
    assert [m["weights_sha256"] for m in meta["teacher"]["ensemble"]] == [sha]
    assert meta["recipe"]["distill"]["ensemble"] == [str(member)]
    assert len(list((tmp_path / "cache" / "teacher-logits").glob("*-tta1-*.npy"))) == 2

    recipe = parse_recipe(f'model = "frontier_s"\n[distill]\nkind = "kd"\nteacher = "{tmp_path / "teacher.json"}"\n'
                          f'ensemble = ["{member}"]\nensemble_sha256 = ["{sha}"]')
    split, cpu = fake_split(40), torch.device("cpu")
    (t, t_meta), (m, m_meta) = load_checkpoint(tmp_path / "teacher.json"), load_checkpoint(member)
    t, m = t.eval(), m.eval()
    got = targets_for(t, t_meta, recipe, make_objective(recipe, 1), split, CIFAR_MEAN, CIFAR_STD, cpu, torch.float32,
                      augmenting=True, ensemble=[(m, m_meta)]).precomputed
    each = [cached_teacher_logits(n, n_meta, 0, split, CIFAR_MEAN, CIFAR_STD, cpu, torch.float32)
            for n, n_meta in ((t, t_meta), (m, m_meta))]
    assert not torch.allclose(each[0], each[1])
    assert torch.allclose(got, (each[0] + each[1]) / 2)


def test_an_ensemble_member_missing_or_not_holding_its_pin_is_a_one_line_error(tmp_path):
    from cifar_speed.errors import CifarSpeedError
    from cifar_speed.train.recipe import parse_recipe
    from cifar_speed.train.teacher import find_ensemble

    recipe = parse_recipe('model = "lightnn"\n[distill]\nkind = "kd"\nteacher = "deepnn"\n'
                          f'ensemble = ["deepnn"]\nensemble_sha256 = ["{"0" * 64}"]')
    with pytest.raises(CifarSpeedError, match=r"ensemble: no checkpoint 'deepnn' with weights 000000000000\.\.\. \(looked in "):
        find_ensemble(recipe, tmp_path)
