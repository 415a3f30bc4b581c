"""Image restoration demo: train the artifact-correction U-Net on simulated cryo-EM
artifacts, plug it into the evaluation pipeline, super-resolve an exposure, and
(optionally) tune the artifact generator with cryoopt's own optimizer.

Run: ``nice -n 10 python examples/restore_demo.py [--quick] [--tune]`` (a few minutes
on 2 CPU cores; ``--quick``: about a CPU minute, small sizes). Writes ``restore_demo/``
(checkpoint and a figure) in the current directory.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from cryoopt.pipeline.preprocess import restorers
from cryoopt.restore import (
    BASELINES,
    TrainConfig,
    evaluate_restoration,
    predict,
    register_checkpoint,
    save_model,
    train_artifact_model,
    tune_generator,
    zero_shot_sr,
)
from cryoopt.restore.artifact import DEFAULT_TRAINING


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, about a minute")
    ap.add_argument("--tune", action="store_true", help="also tune the generator settings with BO (slow)")
    ap.add_argument("--out", type=Path, default=Path("restore_demo"))
    ap.add_argument("--steps", type=int, default=None, help="training steps of the U-Net and of the SR network "
                                                             "(default: 60 and 40 with --quick, else the full training)")
    ap.add_argument("--images", type=int, default=None, help="simulated images (default: 40 with --quick, else 200)")
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    args.out.mkdir(exist_ok=True)

    # 1. artifact correction: simulate (70/15/15 over disjoint specimens), train, test
    steps, n = (60, 40) if args.quick else (DEFAULT_TRAINING.steps, 200)
    steps, n = args.steps or steps, args.images or n
    sr_steps = args.steps or (40 if args.quick else 200)
    run = train_artifact_model(n_images=n, config=DEFAULT_TRAINING.model_copy(update={"steps": steps, "val_every": max(steps // 4, 1)}))
    for h in run.result.history:
        print(f"step {h['step']:.0f}: {h['seconds']:.0f} s, train loss {h['train_loss']:.3f}, val PSNR {h['val_psnr_db']:.2f} dB, SSIM {h['val_ssim']:.3f}")
    methods = {"input": lambda x: x, **BASELINES, "unet": lambda x: predict(run.model, x)}
    for name, fn in methods.items():
        q = evaluate_restoration(fn, run.data.test)
        print(f"test {name:<10} PSNR {q['psnr_db']:6.2f} dB  SSIM {q['ssim']:.3f}  FRC {q['frc_px_median']:.2f} px")

    # 2. the pipeline hook: register the checkpoint and restore through the registry
    ckpt = save_model(run.model, args.out / "unet.pt", meta={"steps": steps, "images": n})
    register_checkpoint("unet-demo", ckpt, replace=True)
    restorer = restorers.get("unet-demo")()
    x, y = run.data.test.inputs[0], run.data.test.targets[0]
    restored = restorer.restore(x)

    # 3. zero-shot super-resolution of a low-magnification copy of the clean field
    low = y.reshape(y.shape[0] // 2, 2, y.shape[1] // 2, 2).mean(axis=(1, 3))
    sr = zero_shot_sr(low, scale=2, config=TrainConfig(steps=sr_steps, batch_size=8, crop_px=24))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(12, 3.2))
    for a, img, title in zip(ax, (x, restored, y, sr.image), ("corrupted", "U-Net", "ground truth", "zero-shot SR x2")):
        a.imshow(img, cmap="gray")
        a.set_title(title)
        a.axis("off")
    fig.tight_layout()
    fig.savefig(args.out / "restore_demo.png", dpi=100)
    print(f"wrote {ckpt} and {args.out / 'restore_demo.png'}")

    # 4. dogfood: choose the generator's settings by validation SSIM with cryoopt.optimize
    if args.tune:
        tuned = tune_generator(budget=4 if args.quick else 12, n_images=40 if args.quick else 80,
                               config=TrainConfig(steps=20 if args.quick else 80, batch_size=8, crop_px=48))
        print(f"best generator settings (val SSIM {tuned.best_val_ssim:.3f}):")
        for k in ("beam_current_pa", "voltage_kv", "charging_strength", "ice_coverage", "ice_fractal_dimension", "ice_radius_nm"):
            print(f"  {k} = {getattr(tuned.best_settings, k):.3g}")
        print("trace:", np.round(tuned.result.trace, 3).tolist())


if __name__ == "__main__":
    main()
