"""The README's Python snippets run as written (in order, one namespace, in a scratch directory).

A block whose first line is ``# not run by the tests: <why>`` is skipped; none is today.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def test_readme_has_snippets_and_names_only_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    assert len(python_blocks()) >= 3
    for path in set(re.findall(r"`((?:configs|examples|docs|tests|benchmarks|scripts)/[\w./-]+\.(?:yaml|py|md|sh))`", text)):
        assert (ROOT / path).exists(), f"README names {path}, which is not in the repository"
    for command in ("run", "resume", "status", "report", "feedback", "inject", "suggest", "tell", "serve", "validate"):
        assert f"`{command} " in text or f"cryoopt {command}" in text, f"README does not document `cryoopt {command}`"


@pytest.mark.slow
def test_readme_python_snippets_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    namespace: dict[str, object] = {"__name__": "readme"}
    ran = 0
    for i, block in enumerate(python_blocks()):
        if block.startswith("# not run by the tests"):
            continue
        exec(compile(block, f"README.md python block {i}", "exec"), namespace)  # noqa: S102 - the README's own code
        ran += 1
    assert ran == len(python_blocks())
    out = capsys.readouterr().out
    assert "protocol:" in out  # the campaign snippet printed its recommendation
    assert (tmp_path / "runs" / "quick_script" / "journal.sqlite").is_file()
    assert os.getcwd() == str(tmp_path)
