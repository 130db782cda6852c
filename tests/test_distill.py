import math

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
