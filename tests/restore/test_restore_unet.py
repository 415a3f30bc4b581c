from __future__ import annotations

import pytest
import torch

from cryoopt.exceptions import ParameterError
from cryoopt.restore import UNet, UNetConfig, count_parameters


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (1, 1, 30, 37), (1, 1, 7, 9)])
@pytest.mark.parametrize("stem", [1, 2])
def test_2d_output_keeps_shape(shape, stem):
    net = UNet(base_channels=4, depth=2, stem=stem)
    assert net(torch.rand(shape)).shape == shape


def test_3d_stack_any_depth():
    net = UNet(base_channels=4, depth=2, dims=3)
    for d in (1, 3, 8):
        x = torch.rand(1, 1, d, 20, 24)
        assert net(x).shape == x.shape


def test_upscale_multiplies_size():
    net = UNet(base_channels=4, depth=1, upscale=2)
    assert net(torch.rand(1, 1, 16, 12)).shape == (1, 1, 32, 24)


def test_untrained_residual_net_is_identity():
    torch.manual_seed(0)
    net = UNet(base_channels=4, depth=2)
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(net(x), x)


def test_tiny_model_parameter_count():
    assert 1_000 < count_parameters(UNet(base_channels=4, depth=2)) < 10_000


@pytest.mark.parametrize(
    "kwargs",
    [{"dims": 4}, {"depth": -1}, {"base_channels": 0}, {"stem": 2, "dims": 3}, {"in_channels": 2}, {"upscale": 1.5}],
)
def test_bad_config_refused(kwargs):
    with pytest.raises(ParameterError):
        UNetConfig(**kwargs)


def test_wrong_tensor_layout_refused():
    with pytest.raises(ParameterError, match="N x C x H x W"):
        UNet(base_channels=4, depth=1)(torch.rand(16, 16))


def test_stem_variant_is_identity_at_init_and_learns_grads():
    net = UNet(base_channels=4, depth=1, stem=2, stem_channels=2)
    x = torch.rand(1, 1, 16, 16, requires_grad=True)
    y = net(x)
    assert torch.equal(y, x)
    y.sum().backward()
    assert net.stem_out.weight.grad is not None and net.stem_out.weight.grad.abs().sum() > 0


def test_padding_option_and_old_checkpoints_keep_replicate():
    with pytest.raises(ParameterError, match="padding"):
        UNetConfig(padding="reflect")
    cfg = UNetConfig(base_channels=4, depth=1).to_dict()
    del cfg["padding"]  # a checkpoint written before the field existed
    assert UNetConfig(**cfg).padding == "replicate"
    net = UNet(base_channels=4, depth=1, stem=2, stem_channels=2, padding="zeros")
    assert all(m.padding_mode == "zeros" for m in net.modules() if isinstance(m, torch.nn.Conv2d))
    x = torch.rand(1, 1, 16, 16)
    assert torch.equal(net(x), x)


@pytest.mark.parametrize("padding", ["replicate", "zeros"])
def test_split_stem_output_equals_concatenated_convolution(padding):
    torch.manual_seed(0)
    net = UNet(base_channels=4, depth=1, stem=2, stem_channels=3, padding=padding)
    torch.nn.init.normal_(net.stem_out.weight)
    torch.nn.init.normal_(net.stem_out.bias)
    a, full = torch.rand(2, 3, 12, 10), torch.rand(2, 3, 12, 10)
    torch.testing.assert_close(net._stem_out(a, full), net.stem_out(torch.cat([a, full], 1)))


def test_channels_last_inside_plain_tensors_outside():
    net = UNet(base_channels=4, depth=1, in_channels=2, out_channels=2)
    assert net.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    y = net(torch.rand(2, 2, 16, 16))
    assert y.is_contiguous()
