"""The pipeline hook: trained U-Nets as :class:`cryoopt.pipeline.preprocess.Restorer`.

:class:`UNetRestorer` wraps a model (or a checkpoint path) and implements
``restore(image) -> image`` (same shape, float, caller's intensity units).
``"unet"`` is registered in :data:`cryoopt.pipeline.preprocess.restorers` as a
zero-argument factory that loads the checkpoint named by the environment variable
``CRYOOPT_RESTORE_CHECKPOINT``; :func:`register_checkpoint` registers any other
checkpoint under a name of your choice.

Example:
    >>> restorer = UNetRestorer(UNet(base_channels=4, depth=1))
    >>> restorer.restore(np.ones((16, 16))).shape
    (16, 16)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cryoopt.exceptions import StateError
from cryoopt.pipeline.preprocess import restorers
from cryoopt.restore._image import as_image
from cryoopt.restore.train import load_model, predict
from cryoopt.restore.unet import UNet

__all__ = ["CHECKPOINT_ENV", "UNetRestorer", "register_checkpoint"]

#: Environment variable naming the checkpoint the registered ``"unet"`` restorer loads.
CHECKPOINT_ENV = "CRYOOPT_RESTORE_CHECKPOINT"


class UNetRestorer:
    """Artifact correction by a trained 2-D :class:`UNet`; implements the pipeline's ``Restorer``.

    Args:
        model: a 2-D UNet, or a path to a checkpoint saved by :func:`~cryoopt.restore.save_model`.
    """

    def __init__(self, model: UNet | str | Path) -> None:
        if isinstance(model, (str, Path)):
            model, self.meta = load_model(model)
        else:
            self.meta = {}
        if not isinstance(model, UNet) or model.config.dims != 2 or model.config.upscale != 1:
            raise StateError("UNetRestorer needs a 2-D UNet that keeps the pixel grid (dims=2, upscale=1)")
        self.model = model.eval()

    def restore(self, image: np.ndarray) -> np.ndarray:
        """Restored copy of a 2-D image (same shape, float32, same intensity units)."""
        return predict(self.model, as_image(image))


def _from_env() -> UNetRestorer:
    path = os.environ.get(CHECKPOINT_ENV)
    if not path:
        raise StateError(
            f"the 'unet' restorer loads the checkpoint named by ${CHECKPOINT_ENV}; set it to a file written by "
            "cryoopt.restore.save_model (or `python -m cryoopt.restore finetune`), or use register_checkpoint()"
        )
    return UNetRestorer(path)


def register_checkpoint(name: str, path: str | Path, *, replace: bool = False) -> None:
    """Register the checkpoint at ``path`` as restorer ``name`` in the pipeline's registry.

    The file is checked now (so a bad path fails here, not mid-campaign) and loaded
    again each time the factory is called.
    """
    load_model(path)
    restorers.register(name, lambda: UNetRestorer(path), replace=replace)


if "unet" not in restorers:
    restorers.register("unet", _from_env)
