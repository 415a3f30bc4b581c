"""Image restoration: artifact correction, cross-microscope enhancement, zero-shot super-resolution.

Every model is a plain-PyTorch :class:`UNet` trained from scratch on the CPU on
simulated data (no pretrained weights are ever downloaded); the structural loss
term is SSIM/MS-SSIM written in torch.

* Artifact correction: :func:`make_artifact_dataset` (simulated charging and ice,
  70/15/15 splits over disjoint specimens) -> :func:`train` -> :class:`UNetRestorer`,
  registered as ``"unet"`` in :data:`cryoopt.pipeline.preprocess.restorers`;
  :func:`artifact_gains` measures it against NL-means/bilateral over seeds;
  :func:`tune_generator` picks the generator's settings with :func:`cryoopt.optimize`
  and :func:`tuned_vs_default` checks them against the defaults on held-out data;
  :func:`finetune` (``python -m cryoopt.restore finetune FOLDER --out m.pt``) adapts it
  to a folder of the user's TIFFs.
* Cross-microscope: :class:`PairStore` (OME-TIFF + SQLite, registered pairs),
  :func:`simulate_lm_pairs`, :func:`cross_microscope_gains` (vs Richardson-Lucy).
* Zero-shot super-resolution: :func:`zero_shot_sr`, :func:`sr_resolution_gain` (FRC).

Example:
    >>> from cryoopt.restore import UNet, TrainConfig, make_artifact_dataset, train
    >>> data = make_artifact_dataset(10, shape=(32, 32))
    >>> result = train(UNet(base_channels=4, depth=1), data.train, data.val,
    ...                config=TrainConfig(steps=2, batch_size=2, crop_px=16))
"""

from __future__ import annotations

from cryoopt.restore.artifact import DEFAULT_MODEL, DEFAULT_TRAINING, artifact_gains, evaluate_restoration, train_artifact_model
from cryoopt.restore.cross import cross_microscope_gains, simulate_lm_pairs
from cryoopt.restore.data import ArtifactDataset, ArtifactSettings, corrupt_image, make_artifact_dataset, split_counts
from cryoopt.restore.evaluate import BASELINES, bilateral, image_quality, nl_means, richardson_lucy, summarize
from cryoopt.restore.finetune import finetune
from cryoopt.restore.losses import RestorationLoss, ms_ssim, ssim
from cryoopt.restore.pairs import Pair, PairStore, read_ome_tiff, write_ome_tiff
from cryoopt.restore.restorer import CHECKPOINT_ENV, UNetRestorer, register_checkpoint
from cryoopt.restore.train import ImagePairs, TrainConfig, TrainResult, load_model, predict, save_model, train, validation_scores
from cryoopt.restore.tune import GENERATOR_SPACE, TuneResult, tune_generator, tuned_vs_default
from cryoopt.restore.unet import UNet, UNetConfig, build_unet, count_parameters
from cryoopt.restore.zssr import SRResult, bicubic_upscale, sr_resolution_gain, zero_shot_sr

__all__ = [
    "BASELINES",
    "DEFAULT_MODEL",
    "DEFAULT_TRAINING",
    "GENERATOR_SPACE",
    "Pair",
    "PairStore",
    "SRResult",
    "TuneResult",
    "artifact_gains",
    "bicubic_upscale",
    "cross_microscope_gains",
    "evaluate_restoration",
    "finetune",
    "read_ome_tiff",
    "simulate_lm_pairs",
    "sr_resolution_gain",
    "train_artifact_model",
    "tune_generator",
    "tuned_vs_default",
    "write_ome_tiff",
    "zero_shot_sr",
    "CHECKPOINT_ENV",
    "ArtifactDataset",
    "ArtifactSettings",
    "ImagePairs",
    "RestorationLoss",
    "TrainConfig",
    "TrainResult",
    "UNet",
    "UNetConfig",
    "UNetRestorer",
    "bilateral",
    "build_unet",
    "corrupt_image",
    "count_parameters",
    "image_quality",
    "load_model",
    "make_artifact_dataset",
    "ms_ssim",
    "nl_means",
    "predict",
    "register_checkpoint",
    "richardson_lucy",
    "save_model",
    "split_counts",
    "ssim",
    "summarize",
    "train",
    "validation_scores",
]
