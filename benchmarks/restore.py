"""Restoration benchmark: artifact-correction gains over seeds, speed, size and memory.

Prints a table and writes ``benchmarks/results/restore.json``.

* Gains on held-out simulated data (test split, disjoint specimens) of the default
  U-Net versus the corrupted input and versus non-local means / bilateral, as
  mean +- sd over ``--seeds`` independent runs (fresh data and initialisation).
* Training time to a stated quality: seconds until the validation SSIM first
  reaches that of non-local means on the same validation images.
* Inference time of one 1024 x 1024 image on the machine's threads (target < 1 s
  on 2 CPU cores), parameters, multiply-accumulates and peak resident memory of
  a fresh process running that inference.
* Cross-microscope: widefield -> confocal U-Net vs Richardson-Lucy on held-out
  simulated pairs (``--cross-seeds``), and zero-shot super-resolution of simulated
  low-magnification EM exposures, FRC resolution vs bicubic (``--sr-seeds``).

Run: ``nice -n 10 python benchmarks/restore.py`` (a few minutes per seed on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cryoopt.restore import UNet, count_parameters, nl_means
from cryoopt.restore.artifact import DEFAULT_MODEL, DEFAULT_TRAINING, artifact_gains
from cryoopt.restore.evaluate import image_quality

RESULTS = Path(__file__).resolve().parent / "results" / "restore.json"


def _macs(model: torch.nn.Module, shape: tuple[int, ...]) -> float:
    total = [0]

    def hook(mod, _inp, out):
        total[0] += out.numel() * (mod.in_channels // mod.groups) * mod.weight[0, 0].numel()

    hs = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    with torch.inference_mode():
        model(torch.zeros(shape))
    for h in hs:
        h.remove()
    return total[0] / 1e9


_MEM_CHILD = """
import resource, sys, torch
from cryoopt.restore import UNet, UNetConfig
torch.set_num_threads(int(sys.argv[1]))
m = UNet(UNetConfig(**eval(sys.argv[2]))).eval()
x = torch.rand(1, 1, 1024, 1024)
if sys.argv[3] == "1":
    with torch.inference_mode():
        m(x)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def speed_and_size(threads: int) -> dict[str, float]:
    torch.set_num_threads(threads)
    model = UNet(DEFAULT_MODEL).eval()
    x = torch.rand(1, 1, 1024, 1024)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(5):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    # peak RSS of a process that builds the model and input, without and with the inference
    out = [subprocess.run([sys.executable, "-c", _MEM_CHILD, str(threads), repr(DEFAULT_MODEL.to_dict()), flag],
                          capture_output=True, text=True, check=True).stdout.split()[-1] for flag in ("0", "1")]
    return {
        "threads": threads,
        "inference_1024_s_median": float(np.median(times)),
        "inference_1024_s_min": float(np.min(times)),
        "parameters": count_parameters(model),
        "gmac_1024": _macs(model, (1, 1, 1024, 1024)),
        "peak_rss_mib": int(out[1]) / 1024,
        "inference_rss_increase_mib": (int(out[1]) - int(out[0])) / 1024,
        "load_average_1min": os.getloadavg()[0],
    }


def time_to_quality(per_seed: list[dict], val_ssim_target: dict[int, float]) -> list[float | None]:
    out = []
    for s in per_seed:
        hit = next((h["seconds"] for h in s["history"] if h.get("val_ssim", -1) >= val_ssim_target[s["seed"]]), None)
        out.append(hit)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=DEFAULT_TRAINING.steps)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cross-seeds", type=int, default=3)
    ap.add_argument("--cross-steps", type=int, default=150)
    ap.add_argument("--sr-seeds", type=int, default=3)
    ap.add_argument("--sr-steps", type=int, default=150)
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    cfg = DEFAULT_TRAINING.model_copy(update={"steps": args.steps, "val_every": 50})
    gains = artifact_gains(range(args.seeds), n_images=args.images, config=cfg, log=lambda m: print(m, flush=True))
    # stated quality: NL-means' SSIM on the same validation images (normalised scale as in training)
    from cryoopt.restore.data import make_artifact_dataset
    from cryoopt.restore._image import Normalization

    targets = {}
    for s in gains["per_seed"]:
        val = make_artifact_dataset(args.images, seed=s["seed"], shape=(96, 96)).val
        vals = []
        for x, y in zip(val.inputs, val.targets):
            n = Normalization.from_image(x)
            vals.append(image_quality(n(nl_means(x)), n(y), frc=False)["ssim"])
        targets[s["seed"]] = float(np.mean(vals))
    ttq = time_to_quality(gains["per_seed"], targets)
    speed = speed_and_size(args.threads)

    from cryoopt.restore import TrainConfig
    from cryoopt.restore.cross import cross_microscope_gains
    from cryoopt.restore.zssr import ZSSR_TRAINING, sr_resolution_gain

    cross = cross_microscope_gains(range(args.cross_seeds), n=40,
                                   config=TrainConfig(steps=args.cross_steps, batch_size=8, crop_px=48, val_every=50)) if args.cross_seeds else None
    sr = sr_resolution_gain(range(args.sr_seeds), config=ZSSR_TRAINING.model_copy(update={"steps": args.sr_steps})) if args.sr_seeds else None

    report = {
        "model": DEFAULT_MODEL.to_dict(),
        "training": cfg.model_dump(),
        "images": args.images,
        "seeds": args.seeds,
        "absolute": gains["absolute"],
        "gains": gains["gains"],
        "train_seconds": [s["train_seconds"] for s in gains["per_seed"]],
        "time_to_nlm_val_ssim_s": ttq,
        "nlm_val_ssim": targets,
        "speed": speed,
        "cross_microscope": None if cross is None else {k: cross[k] for k in ("absolute", "gains", "per_seed")},
        "zero_shot_sr": sr,
        "wall_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))

    def ms(d: dict) -> str:
        return f"{d['mean']:+.3f} +- {d['sd']:.3f}"

    print(f"\nArtifact correction, test split, {args.seeds} seeds (mean +- sd); FRC = median 1/7-threshold resolution vs truth, px")
    print(f"{'method':<12}{'PSNR dB':>20}{'SSIM':>20}{'FRC px':>20}")
    for name, a in gains["absolute"].items():
        print(f"{name:<12}" + "".join(f"{a[m]['mean']:>12.3f} +- {a[m]['sd']:<5.3f}" for m in ("psnr_db", "ssim", "frc_px_median")))
    print(f"\n{'U-Net gain':<14}{'dPSNR dB':>20}{'dSSIM':>20}{'FRC gain px':>20}")
    for ref, g in gains["gains"].items():
        print(f"{ref:<14}" + "".join(f"{ms(g[m]):>20}" for m in ("psnr_db", "ssim", "frc_px_median")))
    print(f"\ntraining: {np.mean(report['train_seconds']):.0f} s for {cfg.steps} steps; time to NL-means' val SSIM: {ttq} s")
    print(f"inference 1024^2 on {speed['threads']} threads: median {speed['inference_1024_s_median']:.3f} s (min {speed['inference_1024_s_min']:.3f} s, "
          f"load avg {speed['load_average_1min']:.1f}); {speed['parameters']} parameters, {speed['gmac_1024']:.2f} GMAC, "
          f"peak RSS {speed['peak_rss_mib']:.0f} MiB (+{speed['inference_rss_increase_mib']:.0f} MiB for the inference)")
    if cross is not None:
        print(f"\nWidefield -> confocal, held-out simulated pairs, {args.cross_seeds} seeds (vs confocal ground truth)")
        print(f"{'method':<16}{'PSNR dB':>20}{'SSIM':>20}{'FRC px':>20}")
        for name, a in cross["absolute"].items():
            print(f"{name:<16}" + "".join(f"{a[m]['mean']:>12.3f} +- {a[m]['sd']:<5.3f}" for m in ("psnr_db", "ssim", "frc_px_median")))
        for ref, g in cross["gains"].items():
            print(f"U-Net {ref:<20}" + "".join(f"{ms(g[m]):>20}" for m in ("psnr_db", "ssim", "frc_px_median")))
    if sr is not None:
        print(f"\nZero-shot x{sr['scale']} SR, {args.sr_seeds} seeds: FRC resolution gain vs bicubic {ms(sr['frc_gain_nm'])} nm; "
              f"PSNR {ms(sr['psnr_gain_db'])} dB; SSIM {ms(sr['ssim_gain'])}")
        for r in sr["per_seed"]:
            print(f"  seed {r['seed']}: FRC zssr {r['frc_nm_zssr']:.1f} nm, bicubic {r['frc_nm_bicubic']:.1f} nm ({r['train_seconds']:.0f} s training)")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
