"""Restoration benchmark: artifact-correction gains over seeds, speed, size and memory.

Prints a table and writes ``benchmarks/results/restore.json``.

* Gains on held-out simulated data (test split, disjoint specimens) of the default
  U-Net versus the corrupted input and versus non-local means / bilateral, as
  mean +- sd over ``--seeds`` independent runs (fresh data and initialisation).
* Training time to a stated quality: seconds (one CPU thread) until the
  validation SSIM first reaches that of non-local means on the same validation
  images, both scored by :func:`cryoopt.restore.validation_scores`.
* Inference time of one 1024 x 1024 image on ``--threads`` threads (target < 1 s
  on 2 CPU cores), measured only once the 1-minute load average is below
  ``--max-load`` (waits, then records the load it got); parameters,
  multiply-accumulates and peak resident memory of a fresh process running that
  inference. ``--speed-only`` re-measures just this and updates the JSON.
* Dogfooding: generator settings tuned by cryoopt's own optimizer
  (:func:`cryoopt.restore.tune_generator`, a small ``--tune-budget``) versus the
  default settings, same training budget, same held-out test split
  (:func:`cryoopt.restore.tuned_vs_default`).
* Cross-microscope: widefield -> confocal U-Net vs Richardson-Lucy on held-out
  simulated pairs (``--cross-seeds``), and zero-shot super-resolution of simulated
  low-magnification EM exposures, FRC resolution vs bicubic (``--sr-seeds``).

Training runs on ``--train-threads`` (default 1) so a shared machine is not
oversubscribed. Run: ``OMP_NUM_THREADS=1 nice -n 10 python benchmarks/restore.py``
(about 2-3 minutes per artifact seed on one core).
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

from cryoopt.restore import UNet, count_parameters, nl_means, validation_scores
from cryoopt.restore.artifact import DEFAULT_MODEL, DEFAULT_TRAINING, artifact_gains

import sys as _sys
from pathlib import Path as _Path

_sys.path.insert(0, str(_Path(__file__).resolve().parent))
from _results import results_dir  # noqa: E402  (benchmarks/results/local unless told otherwise)

RESULTS = results_dir() / "restore.json"


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


def _wait_for_load(max_load: float, max_wait_s: float, log=print) -> float:
    """Poll the 1-minute load average until it is below ``max_load`` or ``max_wait_s`` passed; returns it."""
    t0 = time.monotonic()
    load = os.getloadavg()[0]
    while load >= max_load and time.monotonic() - t0 < max_wait_s:
        log(f"load average {load:.2f} >= {max_load}: waiting before timing inference")
        time.sleep(20)
        load = os.getloadavg()[0]
    return load


def speed_and_size(threads: int, *, max_load: float = 1.5, max_wait_s: float = 900.0, repeats: int = 7) -> dict[str, float]:
    torch.set_num_threads(threads)
    model = UNet(DEFAULT_MODEL).eval()
    x = torch.rand(1, 1, 1024, 1024)
    load_before = _wait_for_load(max_load, max_wait_s)
    times = []
    with torch.inference_mode():
        model(x)
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
    load_after = os.getloadavg()[0]
    # peak RSS of a process that builds the model and input, without and with the inference
    out = [subprocess.run([sys.executable, "-c", _MEM_CHILD, str(threads), repr(DEFAULT_MODEL.to_dict()), flag],
                          capture_output=True, text=True, check=True).stdout.split()[-1] for flag in ("0", "1")]
    return {
        "threads": threads,
        "inference_1024_s_median": float(np.median(times)),
        "inference_1024_s_min": float(np.min(times)),
        "repeats": repeats,
        "parameters": count_parameters(model),
        "gmac_1024": _macs(model, (1, 1, 1024, 1024)),
        "peak_rss_mib": int(out[1]) / 1024,
        "inference_rss_increase_mib": (int(out[1]) - int(out[0])) / 1024,
        "load_average_1min": load_before,
        "load_average_1min_after": load_after,
        "idle": bool(load_before < max_load),
        "max_load": max_load,
        "cpu_count": os.cpu_count(),
    }


def time_to_quality(per_seed: list[dict], targets: dict[int, dict[str, float]], keys: tuple[str, ...] = ("val_ssim",)) -> list[float | None]:
    """Seconds of training until a validation pass first reaches every ``targets[seed][key]`` (None: never)."""
    out = []
    for s in per_seed:
        t = targets[s["seed"]]
        hit = next((h["seconds"] for h in s["history"] if all(h.get(k, -np.inf) >= t[k] for k in keys)), None)
        out.append(hit)
    return out


def nlm_val_scores(n_images: int, seed: int, shape: tuple[int, int] = (96, 96)) -> dict[str, float]:
    """NL-means' validation SSIM and PSNR on the training scale, scored exactly as the network's validation history."""
    from cryoopt.restore._image import Normalization
    from cryoopt.restore.data import make_artifact_dataset

    val = make_artifact_dataset(n_images, seed=seed, shape=shape).val
    outs, tgts = [], []
    for x, y in zip(val.inputs, val.targets):
        n = Normalization.from_image(x)
        outs.append(n(nl_means(x)))
        tgts.append(n(y))
    return validation_scores(outs, tgts)


def _r(ts: list[float | None]) -> list[float | None]:
    return [None if t is None else round(t, 1) for t in ts]


def _ms(d: dict) -> str:
    return f"{d['mean']:+.3f} +- {d['sd']:.3f}"


def _print_speed(speed: dict) -> None:
    print(f"inference 1024^2 on {speed['threads']} threads: median {speed['inference_1024_s_median']:.3f} s (min {speed['inference_1024_s_min']:.3f} s, "
          f"load avg {speed['load_average_1min']:.2f} before / {speed['load_average_1min_after']:.2f} after, idle={speed['idle']}); "
          f"{speed['parameters']} parameters, {speed['gmac_1024']:.2f} GMAC, "
          f"peak RSS {speed['peak_rss_mib']:.0f} MiB (+{speed['inference_rss_increase_mib']:.0f} MiB for the inference)")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--steps", type=int, default=DEFAULT_TRAINING.steps)
    ap.add_argument("--train-threads", type=int, default=1, help="torch threads for training and evaluation")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for the inference timing")
    ap.add_argument("--max-load", type=float, default=1.5, help="time inference only below this 1-minute load average")
    ap.add_argument("--max-wait", type=float, default=900.0, help="seconds to wait for that load before timing anyway")
    ap.add_argument("--speed-only", action="store_true", help="only re-measure inference speed; update the JSON's 'speed'")
    ap.add_argument("--cross-seeds", type=int, default=3)
    ap.add_argument("--cross-steps", type=int, default=150)
    ap.add_argument("--sr-seeds", type=int, default=3)
    ap.add_argument("--sr-steps", type=int, default=150)
    ap.add_argument("--tune-budget", type=int, default=8, help="optimizer trials choosing the generator settings (0: skip)")
    ap.add_argument("--tune-steps", type=int, default=200, help="training steps per tuning trial")
    ap.add_argument("--dogfood-seeds", type=int, default=3)
    ap.add_argument("--dogfood-steps", type=int, default=1000, help="training steps of each tuned / default network")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)

    if args.speed_only:
        speed = speed_and_size(args.threads, max_load=args.max_load, max_wait_s=args.max_wait)
        report = json.loads(args.out.read_text()) if args.out.is_file() else {}
        report["speed"] = speed
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1, default=float))
        _print_speed(speed)
        return report

    torch.set_num_threads(args.train_threads)
    t0 = time.perf_counter()
    cfg = DEFAULT_TRAINING.model_copy(update={"steps": args.steps})
    gains = artifact_gains(range(args.seeds), n_images=args.images, config=cfg, log=lambda m: print(m, flush=True))
    targets = {s["seed"]: nlm_val_scores(args.images, s["seed"]) for s in gains["per_seed"]}
    ttq = time_to_quality(gains["per_seed"], targets, ("val_ssim",))
    ttq_psnr = time_to_quality(gains["per_seed"], targets, ("val_psnr_db",))
    ttq_both = time_to_quality(gains["per_seed"], targets, ("val_ssim", "val_psnr_db"))

    from cryoopt.restore import TrainConfig
    from cryoopt.restore.cross import cross_microscope_gains
    from cryoopt.restore.tune import tune_generator, tuned_vs_default
    from cryoopt.restore.zssr import ZSSR_TRAINING, sr_resolution_gain

    dogfood = None
    if args.tune_budget:
        t1 = time.perf_counter()
        tune_cfg = DEFAULT_TRAINING.model_copy(update={"steps": args.tune_steps, "crop_px": 48, "val_every": 0})
        tuned = tune_generator(budget=args.tune_budget, seed=0, config=tune_cfg)
        tune_s = time.perf_counter() - t1
        print(f"tuned generator ({args.tune_budget} trials, {tune_s:.0f} s): {tuned.best_settings.model_dump(include=set(tuned.result.best.params))}, "
              f"tuning val SSIM {tuned.best_val_ssim:.3f}", flush=True)
        dcfg = DEFAULT_TRAINING.model_copy(update={"steps": args.dogfood_steps})
        comp = tuned_vs_default(range(args.dogfood_seeds), tuned=tuned, n_images=args.images, config=dcfg, log=lambda m: print(m, flush=True))
        trials = [{"params": t.params, "values": t.values, "source": t.source} for t in tuned.result.history]
        dogfood = {"tune_budget": args.tune_budget, "tune_steps": args.tune_steps, "tune_seconds": tune_s,
                   "tune_best_val_ssim": tuned.best_val_ssim, "tune_trials": trials, "train_steps": args.dogfood_steps, **comp}

    cross = cross_microscope_gains(range(args.cross_seeds), n=40,
                                   config=TrainConfig(steps=args.cross_steps, batch_size=8, crop_px=48, val_every=50)) if args.cross_seeds else None
    sr = sr_resolution_gain(range(args.sr_seeds), config=ZSSR_TRAINING.model_copy(update={"steps": args.sr_steps})) if args.sr_seeds else None
    speed = speed_and_size(args.threads, max_load=args.max_load, max_wait_s=args.max_wait)

    report = {
        "model": DEFAULT_MODEL.to_dict(),
        "training": cfg.model_dump(),
        "train_threads": args.train_threads,
        "images": args.images,
        "seeds": args.seeds,
        "absolute": gains["absolute"],
        "gains": gains["gains"],
        "per_seed": [{k: v for k, v in s.items() if k != "history"} for s in gains["per_seed"]],
        "val_history": {s["seed"]: s["history"] for s in gains["per_seed"]},
        "train_seconds": [s["train_seconds"] for s in gains["per_seed"]],
        "time_to_nlm_val_ssim_s": ttq,
        "time_to_nlm_val_psnr_s": ttq_psnr,
        "time_to_nlm_val_ssim_and_psnr_s": ttq_both,
        "nlm_val_ssim": {k: v["val_ssim"] for k, v in targets.items()},
        "nlm_val_psnr_db": {k: v["val_psnr_db"] for k, v in targets.items()},
        "val_every": cfg.val_every,
        "speed": speed,
        "dogfood_tuned_generator": dogfood,
        "cross_microscope": None if cross is None else {k: cross[k] for k in ("absolute", "gains", "per_seed")},
        "zero_shot_sr": sr,
        "wall_seconds": time.perf_counter() - t0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float))

    print(f"\nArtifact correction, test split, {args.seeds} seeds (mean +- sd); FRC = median 1/7-threshold resolution vs truth, px")
    print(f"{'method':<12}{'PSNR dB':>20}{'SSIM':>20}{'FRC px':>20}")
    for name, a in gains["absolute"].items():
        print(f"{name:<12}" + "".join(f"{a[m]['mean']:>12.3f} +- {a[m]['sd']:<5.3f}" for m in ("psnr_db", "ssim", "frc_px_median")))
    print(f"\n{'U-Net gain':<14}{'dPSNR dB':>20}{'dSSIM':>20}{'FRC gain px':>20}")
    for ref, g in gains["gains"].items():
        print(f"{ref:<14}" + "".join(f"{_ms(g[m]):>20}" for m in ("psnr_db", "ssim", "frc_px_median")))
    print(f"\ntraining ({args.train_threads} thread): {np.mean(report['train_seconds']):.0f} s for {cfg.steps} steps; "
          f"time to NL-means' val SSIM {_r(ttq)} s, PSNR {_r(ttq_psnr)} s, both {_r(ttq_both)} s "
          f"(validation every {cfg.val_every} steps; NL-means val SSIM {[round(v['val_ssim'], 3) for v in targets.values()]}, "
          f"PSNR {[round(v['val_psnr_db'], 2) for v in targets.values()]} dB)")
    _print_speed(speed)
    if dogfood is not None:
        print(f"\nTuned vs default generator ({args.tune_budget} BO trials x {args.tune_steps} steps; then {args.dogfood_steps} steps each, "
              f"{args.dogfood_seeds} seeds, same test split)")
        for name in ("default", "tuned"):
            a = dogfood[name]
            print(f"{name:<12}" + "".join(f"{a[m]['mean']:>12.3f} +- {a[m]['sd']:<5.3f}" for m in ("psnr_db", "ssim", "frc_px_median")))
        print(f"{'tuned-def.':<12}" + "".join(f"{_ms(dogfood['tuned_minus_default'][m]):>20}" for m in ("psnr_db", "ssim", "frc_px_median")))
    if cross is not None:
        print(f"\nWidefield -> confocal, held-out simulated pairs, {args.cross_seeds} seeds (vs confocal ground truth)")
        print(f"{'method':<16}{'PSNR dB':>20}{'SSIM':>20}{'FRC px':>20}")
        for name, a in cross["absolute"].items():
            print(f"{name:<16}" + "".join(f"{a[m]['mean']:>12.3f} +- {a[m]['sd']:<5.3f}" for m in ("psnr_db", "ssim", "frc_px_median")))
        for ref, g in cross["gains"].items():
            print(f"U-Net {ref:<20}" + "".join(f"{_ms(g[m]):>20}" for m in ("psnr_db", "ssim", "frc_px_median")))
    if sr is not None:
        print(f"\nZero-shot x{sr['scale']} SR, {args.sr_seeds} seeds: FRC resolution gain vs bicubic {_ms(sr['frc_gain_nm'])} nm; "
              f"PSNR {_ms(sr['psnr_gain_db'])} dB; SSIM {_ms(sr['ssim_gain'])}")
        for r in sr["per_seed"]:
            print(f"  seed {r['seed']}: FRC zssr {r['frc_nm_zssr']:.1f} nm, bicubic {r['frc_nm_bicubic']:.1f} nm ({r['train_seconds']:.0f} s training)")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
