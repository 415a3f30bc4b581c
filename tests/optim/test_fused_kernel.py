"""The fused qLogNEHVI kernel never hangs a run: a stale torch-extension lock is the reproducer.

A process killed while torch builds BoTorch's kernel leaves ``<TORCH_EXTENSIONS_DIR>/
logei_fused_ext/lock``; torch's ``FileBaton.wait`` then waits for it forever. Each test
runs in a fresh interpreter (BoTorch loads the kernel once per process) against a
temporary ``TORCH_EXTENSIONS_DIR`` holding such a lock.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cryoopt.optim import fused_kernel
from cryoopt.optim.fused_kernel import KernelLockError

SRC = Path(__file__).resolve().parents[2] / "src"

PROPOSE = textwrap.dedent(
    """
    import json, math
    from cryoopt.optim import BayesianOptimizer
    import botorch.acquisition.multi_objective.logei as logei
    from cryoopt.space import SearchSpace

    space = SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}})

    def last_proposal():
        \"\"\"The first BO proposal of a seeded two-objective run, and whether the fused kernel is loaded.\"\"\"
        opt = BayesianOptimizer(space, seed=0, objectives={"quality": "maximize", "prep_time_h": "minimize"},
                                n_initial=3, num_restarts=2, raw_samples=16, mc_samples=16)
        for _ in range(4):
            (t,) = opt.ask()
            x = t.params["x"]
            opt.tell(t, {"quality": x, "prep_time_h": 1 + 4 * x * x})
        return t, logei._C is not None
    """
)
MULTI_OBJECTIVE_RUN = PROPOSE + textwrap.dedent(
    """
    t, fused = last_proposal()
    print(json.dumps({"source": t.source, "fused": fused}))
    """
)
# the same seeded run twice in one interpreter: on the fused kernel, then on BoTorch's pure-Python
# path (``use_fused`` reads ``_C`` at each call; a failed or done load is not attempted again)
FUSED_THEN_PLAIN = PROPOSE + textwrap.dedent(
    """
    t, fused = last_proposal()
    logei._C = None
    plain, plain_fused = last_proposal()
    print(json.dumps({"x": t.params["x"], "source": t.source, "fused": fused,
                      "plain_x": plain.params["x"], "plain_source": plain.source, "plain_fused": plain_fused}))
    """
)


def _env(extensions_dir: Path) -> dict[str, str]:
    return dict(os.environ, TORCH_EXTENSIONS_DIR=str(extensions_dir), OMP_NUM_THREADS="1",
                PYTHONPATH=os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]))


def _run(code: str, extensions_dir: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env=_env(extensions_dir), capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def stale_lock(tmp_path: Path) -> Path:
    lock = tmp_path / fused_kernel.EXTENSION_NAME / "lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("")  # what a process killed mid-build leaves behind
    return lock


@pytest.mark.timeout(180)
def test_stale_lock_does_not_hang_a_multi_objective_proposal(stale_lock: Path) -> None:
    proc = _run(MULTI_OBJECTIVE_RUN, stale_lock.parent.parent, timeout=150)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"source": "bo", "fused": False}  # a BO proposal, on BoTorch's pure-Python path
    assert stale_lock.exists()  # nobody waited for it or took it
    assert not list(stale_lock.parent.glob("*.so")) and not (stale_lock.parent / "build.ninja").exists()  # nothing compiled


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_botorch_alone_hangs_on_the_same_lock(stale_lock: Path) -> None:
    """The reproducer is real: BoTorch's own loader is still waiting on the stale lock 5 s later."""
    code = ("import botorch.acquisition.multi_objective.logei as m; print('loading', flush=True); "
            "m._try_load_fused_kernel(); print('loaded', flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], env=_env(stale_lock.parent.parent),
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "loading"  # imports done
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        assert not (stale_lock.parent / "build.ninja").exists()  # waiting on the lock, not compiling
    finally:
        proc.kill()
        proc.wait()


def test_build_gives_up_on_a_stale_lock_with_a_typed_error(stale_lock: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(stale_lock.parent.parent))
    with pytest.raises(KernelLockError, match="delete it") as err:
        fused_kernel.build(wait_s=0.3)
    assert str(stale_lock) in str(err.value)
    assert isinstance(err.value, TimeoutError)
    assert fused_kernel.status()["state"] == "not built"


def test_status_and_prepare_need_a_matching_stamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A library without a stamp for this torch/BoTorch/CPU is never imported."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    directory = fused_kernel.build_directory()
    directory.mkdir(parents=True)
    (directory / f"{fused_kernel.EXTENSION_NAME}.so").write_bytes(b"not a library")
    assert fused_kernel.status()["state"] == "not built"
    (directory / fused_kernel.STAMP_NAME).write_text(json.dumps({"torch": "0.0"}))
    info = fused_kernel.status()
    assert info["state"] == "stale" and "torch" in info["reason"]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.skipif(shutil.which("c++") is None and shutil.which("g++") is None, reason="needs a C++ compiler")
def test_set_up_build_is_used_and_gives_the_same_proposals(tmp_path: Path) -> None:
    """Built at set-up, the kernel is imported (no compile, no lock) and proposes what the Python path does.

    The set-up build (``scripts/setup.sh`` runs ``python -m cryoopt.optim.fused_kernel build``) is copied
    into a private extensions folder, its stamp unchanged, when it is ready for this environment: a
    second compile costs minutes and checks nothing the set-up's did not. Otherwise it is built here.
    """
    target = tmp_path / fused_kernel.EXTENSION_NAME
    installed = fused_kernel.status()
    if installed["state"] == "ready":
        target.mkdir()
        for name in (Path(installed["library"]).name, fused_kernel.STAMP_NAME):
            shutil.copy2(Path(installed["build_directory"]) / name, target / name)  # keeps mtime: the stamp matches
    else:
        build = _run("from cryoopt.optim.fused_kernel import main; raise SystemExit(main(['build']))", tmp_path, 540)
        assert build.returncode == 0, build.stderr[-2000:]
    compiled = {p.name: p.stat().st_mtime_ns for p in target.iterdir()}
    both = _run(FUSED_THEN_PLAIN, tmp_path, 150)
    assert both.returncode == 0, both.stderr[-2000:]
    out = json.loads(both.stdout.strip().splitlines()[-1])
    assert out["fused"] is True and out["source"] == "bo"
    assert out["plain_fused"] is False and out["plain_source"] == "bo"
    assert out["plain_x"] == pytest.approx(out["x"], abs=1e-6)
    assert {p.name: p.stat().st_mtime_ns for p in target.iterdir()} == compiled  # neither run compiled or locked
