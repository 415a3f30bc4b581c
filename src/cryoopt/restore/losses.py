r"""Training losses: L1 plus a structural term (SSIM or MS-SSIM), written in torch.

No pretrained perceptual network is available offline, so the structural term is
SSIM (Wang et al. 2004, IEEE TIP 13:600) with the standard 11-tap Gaussian window
(sigma 1.5), ``K1 = 0.01``, ``K2 = 0.03``, or its multi-scale form (Wang, Simoncelli
& Bovik 2003) with the published scale weights.

.. math:: \mathcal{L} = w_{L1} \, |x - y|_1 + w_{S} \, (1 - \mathrm{SSIM}(x, y))

Example:
    >>> x = torch.rand(2, 1, 32, 32)
    >>> float(ssim(x, x))
    1.0
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from cryoopt.exceptions import ParameterError

__all__ = ["RestorationLoss", "ms_ssim", "ssim"]

#: MS-SSIM scale weights of Wang, Simoncelli & Bovik (2003).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gauss(size: int, sigma: float, dims: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(g**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over every spatial axis ('valid' region)."""
    c = x.shape[1]
    dims = x.dim() - 2
    for ax in range(dims):
        shape = [1] * dims
        shape[ax] = g.numel()
        k = g.reshape(1, 1, *shape).repeat(c, 1, *([1] * dims))
        x = (F.conv2d if dims == 2 else F.conv3d)(x, k, groups=c)
    return x


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, data_range: float, win: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    if x.shape != y.shape:
        raise ParameterError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.dim() not in (4, 5):
        raise ParameterError(f"ssim: expected N x C x H x W or N x C x D x H x W, got {tuple(x.shape)}")
    if x.dim() == 5:  # stacks: SSIM per plane (z is usually sampled too coarsely for a 3-D window)
        x = x.transpose(1, 2).flatten(0, 1)
        y = y.transpose(1, 2).flatten(0, 1)
    spatial = x.shape[2:]
    win_axes = [min(win, s) for s in spatial]
    w = min(win_axes)
    if w < 3:
        raise ParameterError(f"ssim: images of spatial size {tuple(spatial)} are too small (need >= 3 px per axis)")
    w -= (w + 1) % 2  # odd window
    g = _gauss(w, sigma, x.dim() - 2, x.device, x.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mx, my = _blur(x, g), _blur(y, g)
    sxx = _blur(x * x, g) - mx * mx
    syy = _blur(y * y, g) - my * my
    sxy = _blur(x * y, g) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).flatten(1).mean(1), cs.flatten(1).mean(1)


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two batches `N x C x H x W` (or `N x C x D x H x W`, plane by plane); returns a scalar.

    The window shrinks (odd, >= 3) for images smaller than ``window``.
    """
    return _ssim_parts(x, y, data_range, window, sigma)[0].mean()


def ms_ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, levels: int = 5, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Multi-scale SSIM, product of per-scale contrast-structure terms and the last luminance.

    ``levels`` is reduced (the weights renormalised) until the coarsest scale is at
    least ``window`` pixels, so small training crops work. Negative per-scale terms
    are clamped at a small positive value (avoids NaN gradients of fractional powers).
    """
    smallest = min(x.shape[2:])
    levels = max(1, min(levels, int(torch.log2(torch.tensor(smallest / window)).floor().item()) + 1 if smallest >= window else 1))
    weights = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    weights = weights / weights.sum()
    pool = F.avg_pool2d if x.dim() == 4 else F.avg_pool3d
    vals = []
    for i in range(levels):
        s, cs = _ssim_parts(x, y, data_range, window, sigma)
        vals.append((s if i == levels - 1 else cs).clamp_min(1e-6))
        if i < levels - 1:
            x, y = pool(x, 2), pool(y, 2)
    stack = torch.stack(vals, dim=0)  # levels x N
    return torch.prod(stack ** weights[:, None], dim=0).mean()


class RestorationLoss(nn.Module):
    """``l1_weight * L1 + structural_weight * (1 - SSIM or MS-SSIM)``.

    Args:
        l1_weight, structural_weight: non-negative weights (not both zero).
        structural: ``"ssim"`` or ``"ms_ssim"``.
        data_range: intensity range of the targets (1 for images normalised to [0, 1]).
    """

    def __init__(self, *, l1_weight: float = 1.0, structural_weight: float = 0.2, structural: str = "ssim", data_range: float = 1.0) -> None:
        super().__init__()
        if l1_weight < 0 or structural_weight < 0 or l1_weight + structural_weight <= 0:
            raise ParameterError(
                f"loss weights must be >= 0 and not both 0, got l1_weight={l1_weight}, structural_weight={structural_weight}"
            )
        if structural not in ("ssim", "ms_ssim"):
            raise ParameterError(f"structural must be 'ssim' or 'ms_ssim', got {structural!r}")
        self.l1_weight, self.structural_weight = float(l1_weight), float(structural_weight)
        self.structural, self.data_range = structural, float(data_range)

    def terms(self, pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """The weighted loss and its unweighted terms ``{"loss", "l1", "structural"}``."""
        l1 = F.l1_loss(pred, target)
        fn = ssim if self.structural == "ssim" else ms_ssim
        st = 1.0 - fn(pred, target, data_range=self.data_range) if self.structural_weight > 0 else torch.zeros((), dtype=pred.dtype)
        return {"loss": self.l1_weight * l1 + self.structural_weight * st, "l1": l1, "structural": st}

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.terms(pred, target)["loss"]
