"""Run a campaign from Python: load a config, run (resumable), rate a trial, read the report.

    python examples/campaign_script.py [runs/example] [EXPERIMENTS]

Running it again continues the same journal (nothing is repeated).
"""

from __future__ import annotations

import sys
from pathlib import Path

from cryoopt.campaign import Campaign
from cryoopt.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def main(directory: str = "runs/example", experiments: str | None = None) -> None:
    overrides = {} if experiments is None else {"budget.experiments": int(experiments)}  # fewer for a quick look
    config = load_config(ROOT / "configs" / "sim_quick.yaml", overrides=overrides)
    campaign = Campaign(config, directory, progress=True)
    summary = campaign.run()  # Ctrl-C stops after the current trial; run again to continue
    print(f"stopped: {summary.stop_reason}; {summary.counts}")
    rec = summary.recommendation  # the protocol to adopt: GP-expected quality, replicates pooled
    if rec is not None:
        print("recommended:", rec.summary())
        print("  params:", rec.params)
        # an operator rates a sample of it; ratings are stored (and blended if configured)
        campaign.feedback(rec.trial_id, 4, "good label penetration, slight background")
    if summary.best is not None:
        print(f"best single observation: trial {summary.best.id}, quality {summary.best.values['quality']:.3f}")
    status = campaign.status()
    print(f"{status.started}/{status.budget} experiments, state {status.state}")
    if summary.report:
        print("report:", summary.report["summary"])


if __name__ == "__main__":
    main(*sys.argv[1:])
