"""Every script in ``examples/`` runs as a user runs it (``python examples/X.py ...``), with the
smallest settings its own command line offers, and prints or writes what its docstring promises.

Each runs in a scratch directory; the sizes are the scripts' own options, so a renamed API, a
changed signature or a moved config breaks a test here before it breaks a user's copy.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

#: script -> its arguments in a smoke run (paths are relative to the scratch directory)
SMOKE_ARGS: dict[str, list[str]] = {
    "sim_gallery.py": ["gallery.png"],
    "optimize_staining.py": ["--budget", "3", "--out", "staining"],
    "train_sectioning.py": ["--steps", "64", "--n-envs", "1", "--episodes", "1", "--save", "ppo.zip"],
    "campaign_script.py": ["campaign", "2"],
    "hrl_campaign.py": ["--blocks", "2", "--more", "2", "--n-initial", "1", "--pretrain-steps", "0",
                        "--learn-steps", "0", "--sections", "2", "--image-size", "64"],
    "restore_demo.py": ["--quick", "--steps", "2", "--images", "24", "--out", "restore"],
}

#: script -> (text its output must hold, files it must write)
PROMISES: dict[str, tuple[list[str], list[str]]] = {
    "sim_gallery.py": (["wrote gallery.png"], ["gallery.png"]),
    "optimize_staining.py": (["bo: best observed quality", "random: best observed quality", "plot:"],
                             ["staining/convergence.png"]),
    "train_sectioning.py": (["mean block return: random", "saved ppo.zip"], ["ppo.zip"]),
    "campaign_script.py": (["stopped: budget", "recommended: trial", "2/2 experiments", "report:"],
                           ["campaign/journal.sqlite", "campaign/report/report.md"]),
    "hrl_campaign.py": (["agents: [", "Pareto front", "recommended: block", "resumed: 4 blocks"], []),
    "restore_demo.py": (["test unet", "test nl_means", "wrote"], ["restore/unet.pt", "restore/restore_demo.png"]),
}


def test_every_example_has_a_smoke_run() -> None:
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(SMOKE_ARGS) == sorted(PROMISES)


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_ARGS))
def test_example_runs_and_does_what_it_says(script: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / script), *SMOKE_ARGS[script]])
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(EXAMPLES / script), run_name="__main__")
    finally:
        torch.set_num_threads(threads)  # restore_demo asks for 2; the rest of the suite runs on 1
    out = capsys.readouterr().out
    texts, files = PROMISES[script]
    for text in texts:
        assert text in out, f"{script} did not print {text!r}:\n{out[-2000:]}"
    for name in files:
        assert (tmp_path / name).is_file(), f"{script} did not write {name}"
