import pytest
import torch
from torch import nn

from cifar_speed.errors import CifarSpeedError
from cifar_speed.models import count_params, create_model, flops_per_image, list_models

# The report's and the tutorial's figures (trainable parameters).
EXPECTED_PARAMS = {"cnn": 2_169_770, "deepnn": 1_186_986, "lightnn": 267_738, "mlp": 3_840_650}


def test_registry_lists_every_model_of_the_report():
    assert {"mlp", "cnn", "mobilenetv3_small", "deepnn", "lightnn", "fast"} <= set(list_models())


@pytest.mark.parametrize("name,params", EXPECTED_PARAMS.items())
def test_parameter_counts_match_the_report(name, params):
    assert count_params(create_model(name)) == params


def test_fast_is_airbench94_sized():
    m = create_model("fast")
    assert count_params(m, trainable_only=False) == 1_972_792  # airbench94's published total
    assert 0.2e9 < flops_per_image(m) < 0.3e9


@pytest.mark.parametrize("name", list_models())
def test_output_shape_and_flops(name):
    m = create_model(name).eval()
    with torch.no_grad():
        out = m(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10)
    assert flops_per_image(m) > 0


def test_mobilenet_keeps_a_4x4_feature_map():
    m = create_model("mobilenetv3_small").eval()
    with torch.no_grad():
        fmap = m.features(torch.randn(1, 3, 32, 32))
    assert fmap.shape[-2:] == (4, 4)


def test_kd_feature_variants():
    t, s = create_model("deepnn").eval(), create_model("lightnn").eval()
    x = torch.randn(2, 3, 32, 32)
    assert t.forward_features(x)[1].shape == s.forward_features(x)[1].shape == (2, 1024)
    assert t.forward_feature_map(x)[1].shape == (2, 32, 8, 8)
    assert s.forward_feature_map(x)[1].shape == (2, 16, 8, 8)
    assert torch.equal(t.forward_features(x)[0], t(x))


def test_fast_tta_shares_weights_and_averages():
    torch.manual_seed(0)
    plain, tta = create_model("fast").eval(), create_model("fast_tta").eval()
    tta.load_state_dict(plain.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        mirror = 0.5 * plain(x) + 0.5 * plain(x.flip(-1))
        plain.tta_level = 1
        assert torch.allclose(plain(x), mirror, atol=1e-6)
        assert tta(x).shape == (2, 10)


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(CifarSpeedError, match="available: cnn, deepnn"):
        create_model("resnet50")


# -- the frontier family (issue: fastest model per accuracy bar) -----------------------------------

FRONTIER = {"frontier_s": (76_280, 13_680_704), "frontier_m": (295_096, 39_774_784),
            "frontier_l": (1_161_272, 130_863_680), "frontier_m_s2": (295_096, 11_946_496)}


def test_stride2_stem_halves_every_feature_map():
    """frontier_m_s2 is frontier_m's weights shape for shape; its stem whitens non-overlapping 2x2 patches,
    so the first conv group sees 16x16 instead of 31x31 and the last one 2x2 before the final pool."""
    sizes = {}
    for name in ("frontier_m", "frontier_m_s2"):
        net, seen = create_model(name).eval(), []
        hooks = [g.register_forward_hook(lambda m, i, o: seen.append(o.shape[-1]))
                 for g in net.layers if g.__class__.__name__ == "ConvGroup"]
        with torch.no_grad():
            net(torch.randn(1, 3, 32, 32))
        for h in hooks:
            h.remove()
        sizes[name] = seen
    assert sizes == {"frontier_m": [15, 7, 3], "frontier_m_s2": [8, 4, 2]}
    assert [p.shape for p in create_model("frontier_m").parameters()] == \
        [p.shape for p in create_model("frontier_m_s2").parameters()]


@pytest.mark.parametrize("name,expected", FRONTIER.items())
def test_frontier_parameter_and_flop_counts(name, expected):
    m = create_model(name)
    params, flops = expected
    assert count_params(m, trainable_only=False) == params
    assert flops_per_image(m) == flops
    with torch.no_grad():
        assert m.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_frontier_is_plain_dense_convolutions():
    # no depthwise or grouped convolutions: CPUs run those far below peak
    for name in FRONTIER:
        convs = [m for m in create_model(name).modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.groups == 1 for c in convs)
        assert all(c.out_channels % 8 == 0 for c in convs)


def test_whitening_eps_damps_the_faintest_patch_directions():
    """init_whitening scales each patch eigenvector by 1/sqrt(eigenvalue + eps): a larger eps (the
    recipe's `whiten_eps`) shrinks the faint directions much more than the strong one."""
    torch.manual_seed(0)
    images = torch.randn(64, 3, 32, 32) * torch.tensor([1.0, 0.5, 0.1]).view(1, 3, 1, 1)
    small, large = create_model("frontier_s"), create_model("frontier_s")
    small.init_whitening(images, eps=5e-4)
    large.init_whitening(images, eps=1.0)
    norms = lambda m: m.whiten.weight[:12].flatten(1).norm(dim=1)  # noqa: E731  (the + copies, strongest first)
    ratio = norms(large) / norms(small)
    assert torch.all(ratio < 1)
    assert ratio[-1] < ratio[0]   # the faintest direction is damped most


@pytest.mark.parametrize("name", ["fast", "frontier_s", "frontier_m_s2"])
def test_fold_batchnorm_is_exact_through_the_max_pool(name):
    """Folding conv1 -> max-pool -> BN into conv1 (positive scales) and conv2 -> BN gives the same logits."""
    from cifar_speed.models.fast import BatchNorm, fold_batchnorm

    torch.manual_seed(0)
    net = create_model(name).eval()
    for m in net.modules():
        if isinstance(m, BatchNorm):   # trained-looking statistics, gamma frozen at 1 as airbench does
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(4, 3, 32, 32)
    folded, n = fold_batchnorm(net)
    assert n == 6 and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
    net.layers[1].norm1.weight.data[0] = -1.0   # a negative scale: that norm stays, the result is still exact
    folded, n = fold_batchnorm(net)
    assert n == 5 and isinstance(folded.layers[1].norm1, nn.BatchNorm2d)
    torch.testing.assert_close(folded(x), net(x), rtol=1e-4, atol=1e-4)
