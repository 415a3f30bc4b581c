"""Command line: ``python -m cryoopt.restore finetune FOLDER --out model.pt [--checkpoint base.pt] ...``."""

from __future__ import annotations

import argparse
import json
import sys

from cryoopt.exceptions import CryoOptError


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cryoopt.restore", description="cryoopt image restoration")
    sub = ap.add_subparsers(dest="command", required=True)
    ft = sub.add_parser("finetune", help="fine-tune the artifact-correction network on a folder of TIFFs")
    ft.add_argument("folder", help="folder of .tif images (or input/ + target/ subfolders of real pairs)")
    ft.add_argument("--out", required=True, help="checkpoint to write")
    ft.add_argument("--checkpoint", default=None, help="checkpoint to start from (default: train from scratch)")
    ft.add_argument("--steps", type=int, default=300)
    ft.add_argument("--lr", type=float, default=5e-4)
    ft.add_argument("--batch-size", type=int, default=8)
    ft.add_argument("--crop", type=int, default=64)
    ft.add_argument("--variants", type=int, default=4, help="simulated corruptions per clean image")
    ft.add_argument("--settings", default=None, help="JSON of ArtifactSettings fields for the corruptions")
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)

    import torch

    from cryoopt.restore.data import ArtifactSettings
    from cryoopt.restore.finetune import FINETUNE_TRAINING, finetune

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = ArtifactSettings.model_validate_json(args.settings) if args.settings else None
        cfg = FINETUNE_TRAINING.model_copy(update={"steps": args.steps, "lr": args.lr, "batch_size": args.batch_size, "crop_px": args.crop})
        path, result = finetune(args.folder, out=args.out, checkpoint=args.checkpoint, config=cfg, variants=args.variants,
                                settings=settings, seed=args.seed)
    except (CryoOptError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": str(path), "steps": result.steps, "seconds": round(result.seconds, 1), **result.final}, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
