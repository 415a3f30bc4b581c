"""Progress lines: silent for short steps, lines with an ETA for long ones."""

from __future__ import annotations

import time

import pytest

from cryoopt import progress as progress_mod
from cryoopt.progress import Heartbeat, Progress, format_duration, report_to


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_short_steps_print_nothing_long_ones_print_lines_with_an_eta(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress_mod.time, "monotonic", clock)
    lines: list[str] = []
    with report_to(lines.append):
        with Progress("quick", total=10) as p:
            for _ in range(10):
                clock.t += 0.1
                p.update()
        assert lines == []
        with Progress("slow", total=100, unit="sections", every_s=10) as p:
            clock.t += 5.0  # set-up before the first unit: left out of the rate
            p.update()
            for _ in range(49):
                clock.t += 0.5
                p.update()
    # a first line after 2 s (no rate yet), then every 10 s: at 41/100 the rate since the first
    # section (0.5 s each; the 5 s set-up left out) leaves 59 x 0.5 = 29.5 s
    assert lines[0] == "slow: 1/100 sections (1 %), 5.0 s"
    assert lines[2] == "slow: 41/100 sections (41 %), 25.0 s, ETA 29.5 s"
    assert lines[-1] == "slow: done, 50 sections in 29.5 s"
    assert all(len(line) < 120 for line in lines)


def test_report_to_none_silences_and_restores() -> None:
    lines: list[str] = []
    with report_to(lines.append):
        with report_to(None):
            assert progress_mod.current_sink() is None
        assert progress_mod.current_sink() is not None
        with Heartbeat("proposing", quiet_s=0.05, every_s=10, key="test-heartbeat"):
            time.sleep(0.1)  # too quick to estimate the next one from
        with Heartbeat("proposing", quiet_s=0.05, every_s=10, key="test-heartbeat"):
            time.sleep(0.12)
        assert not any("last one" in line for line in lines)
        with Heartbeat("proposing", quiet_s=0.05, every_s=0.05, key="test-heartbeat"):
            time.sleep(0.6)
        with Heartbeat("proposing", quiet_s=0.05, every_s=10, key="test-heartbeat"):
            time.sleep(0.12)
    assert any(line.startswith("proposing: running") for line in lines)
    assert any("the last one took" in line for line in lines)  # the second call's ETA comes from the first
    assert lines[-1].startswith("proposing: done in")


def test_format_duration() -> None:
    assert format_duration(4.21) == "4.2 s"
    assert format_duration(185) == "3 min 05 s"
    assert format_duration(3720) == "1 h 02 min"
