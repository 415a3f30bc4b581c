"""A small plain-PyTorch U-Net for 2-D images and 3-D stacks.

The network predicts a residual (``output = input + f(input)``) by default, which
makes an untrained network the identity and speeds up training of restoration
tasks where the input is already close to the target. With ``upscale > 1`` the
input is first resized by bicubic/trilinear interpolation and the network refines
the up-sampled image (used by zero-shot super-resolution).

Example:
    >>> net = UNet(base_channels=4, depth=2)
    >>> net(torch.zeros(1, 1, 32, 32)).shape
    torch.Size([1, 1, 32, 32])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from cryoopt.exceptions import ParameterError

__all__ = ["UNet", "UNetConfig", "build_unet", "count_parameters"]


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of a :class:`UNet` (everything needed to rebuild it from a checkpoint).

    Attributes:
        in_channels, out_channels: image channels (1 for grey images).
        base_channels: feature maps at full resolution; doubled at each level.
        depth: number of down-sampling steps (the image side must be divisible by ``2**depth``;
            :class:`UNet` pads otherwise).
        dims: 2 for images `N x C x H x W`, 3 for stacks `N x C x D x H x W`.
        residual: predict ``output - input`` (needs ``in_channels == out_channels``).
        upscale: integer up-sampling factor applied before the network (1: none).
        stem: space-to-depth factor (``dims=2`` only). With ``stem > 1`` one thin 3x3
            convolution (``stem_channels`` maps) runs at full resolution, its maps are
            rearranged into ``stem**2`` times more channels at ``1/stem`` resolution
            (pixel-unshuffle) for the U-Net, and the result comes back by
            pixel-shuffle and a final 3x3 convolution joined with the full-resolution
            maps, so the costly convolutions run on fewer, wider feature maps (about
            3x faster on CPU).
        stem_channels: feature maps of the full-resolution stem.
        padding: border handling of the 3x3 convolutions, ``"replicate"`` (edge
            pixels repeated) or ``"zeros"``. Zero padding is fused into the
            convolution by oneDNN while replicate padding copies every feature map
            once more (about 20 % of CPU inference time); the default stays
            ``"replicate"`` so checkpoints saved without this field behave as before.

    2-D networks keep weights and activations in the channels-last (NHWC) memory
    layout, which oneDNN convolves about twice as fast on CPU as NCHW for these
    narrow layers; inputs and outputs are ordinary tensors.
    """

    in_channels: int = 1
    out_channels: int = 1
    base_channels: int = 16
    depth: int = 2
    dims: int = 2
    residual: bool = True
    upscale: int = 1
    stem: int = 1
    stem_channels: int = 4
    padding: str = "replicate"

    def __post_init__(self) -> None:
        for name in ("in_channels", "out_channels", "base_channels", "upscale", "stem", "stem_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"{name} must be a positive integer, got {v!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or not 0 <= self.depth <= 6:
            raise ParameterError(f"depth must be an integer in 0..6, got {self.depth!r}")
        if self.dims not in (2, 3):
            raise ParameterError(f"dims must be 2 (images) or 3 (stacks), got {self.dims!r}")
        if self.stem > 1 and self.dims != 2:
            raise ParameterError("stem > 1 is for 2-D images only; pass stem=1 with dims=3")
        if self.padding not in ("replicate", "zeros"):
            raise ParameterError(f"padding must be 'replicate' or 'zeros', got {self.padding!r}")
        if self.residual and self.in_channels != self.out_channels:
            raise ParameterError("residual=True needs in_channels == out_channels; pass residual=False")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _block(dims: int, c_in: int, c_out: int, padding: str = "replicate") -> nn.Sequential:
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return nn.Sequential(
        conv(c_in, c_out, 3, padding=1, padding_mode=padding),
        nn.LeakyReLU(0.1, inplace=True),
        conv(c_out, c_out, 3, padding=1, padding_mode=padding),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet(nn.Module):
    """U-Net (Ronneberger et al. 2015) with average-pool down- and interpolation up-sampling.

    Stacks (``dims=3``) are pooled in H and W only (microscope stacks are sampled
    more coarsely along z), so any number of planes works.

    Input `N x C x H x W` (``dims=2``) or `N x C x D x H x W` (``dims=3``); any spatial size
    (edge-padded to a multiple of ``stem * 2**depth`` and cropped back). Output has the
    input's spatial size times ``upscale``. Keyword arguments are those of
    :class:`UNetConfig`.
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is not None and kwargs:
            raise ParameterError("pass either a UNetConfig or keyword arguments, not both")
        self.config = config if config is not None else UNetConfig(**kwargs)
        c = self.config
        conv = nn.Conv2d if c.dims == 2 else nn.Conv3d
        widths = [c.base_channels * 2**i for i in range(c.depth + 1)]
        if c.stem > 1:
            sc = c.stem_channels
            self.stem_in = nn.Sequential(nn.Conv2d(c.in_channels, sc, 3, padding=1, padding_mode=c.padding), nn.LeakyReLU(0.1, inplace=True))
            self.stem_out = nn.Conv2d(2 * sc, c.out_channels, 3, padding=1, padding_mode=c.padding)
        self.inc = _block(c.dims, c.in_channels if c.stem == 1 else c.stem_channels * c.stem**2, widths[0], c.padding)
        self.down = nn.ModuleList(_block(c.dims, widths[i], widths[i + 1], c.padding) for i in range(c.depth))
        self.up = nn.ModuleList(_block(c.dims, widths[i + 1] + widths[i], widths[i], c.padding) for i in reversed(range(c.depth)))
        self.out = conv(widths[0], c.out_channels if c.stem == 1 else c.stem_channels * c.stem**2, 1)
        last = self.out if c.stem == 1 else self.stem_out
        nn.init.zeros_(last.weight)  # start as the identity (residual) / zero map
        nn.init.zeros_(last.bias)
        if c.dims == 2:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        if x.dim() != c.dims + 2 or x.shape[1] != c.in_channels:
            want = "N x C x H x W" if c.dims == 2 else "N x C x D x H x W"
            raise ParameterError(f"UNet expects a {want} tensor with C={c.in_channels}, got shape {tuple(x.shape)}")
        if c.upscale > 1:
            mode = "bicubic" if c.dims == 2 else "trilinear"
            x = F.interpolate(x, scale_factor=c.upscale, mode=mode, align_corners=False)
        size = x.shape[2:]
        m = 2**c.depth * c.stem
        pad: list[int] = []
        for k, s in enumerate(reversed(size)):
            p = (-s) % m if k < 2 else 0  # stacks are pooled laterally only
            pad += [p // 2, p - p // 2]
        xp = F.pad(x, pad, mode="replicate") if any(pad) else x
        if c.dims == 2:
            xp = xp.contiguous(memory_format=torch.channels_last)
        if c.stem > 1:
            full = self.stem_in(xp)
            skips = [self.inc(F.pixel_unshuffle(full, c.stem))]
        else:
            skips = [self.inc(xp)]
        for blk in self.down:
            h = skips[-1]
            skips.append(blk(F.avg_pool2d(h, 2) if c.dims == 2 else F.avg_pool3d(h, (1, 2, 2))))
        h = skips.pop()
        mode = "bilinear" if c.dims == 2 else "trilinear"
        for blk in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode=mode, align_corners=False)
            h = blk(torch.cat([h, skip], dim=1))
        y = self.out(h)
        if c.stem > 1:
            y = self._stem_out(F.leaky_relu(F.pixel_shuffle(y, c.stem), 0.1), full)
        if any(pad):
            idx = [slice(None), slice(None)] + [slice(pad[2 * (len(size) - 1 - i)], pad[2 * (len(size) - 1 - i)] + size[i]) for i in range(len(size))]
            y = y[tuple(idx)]
        y = x + y if c.residual else y
        return y.contiguous() if c.dims == 2 else y


    def _stem_out(self, a: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        """``stem_out(cat([a, full]))`` as two convolutions over the weight's halves (no full-resolution concatenation)."""
        w, sc = self.stem_out.weight, a.shape[1]
        if self.config.padding == "zeros":
            return F.conv2d(a, w[:, :sc], None, padding=1) + F.conv2d(full, w[:, sc:], self.stem_out.bias, padding=1)
        rep = [1, 1, 1, 1]
        return F.conv2d(F.pad(a, rep, mode="replicate"), w[:, :sc]) + F.conv2d(F.pad(full, rep, mode="replicate"), w[:, sc:], self.stem_out.bias)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def build_unet(config: UNetConfig, *, seed: int = 0) -> UNet:
    """A :class:`UNet` whose initial weights depend only on ``seed`` (the global torch RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet(config)
