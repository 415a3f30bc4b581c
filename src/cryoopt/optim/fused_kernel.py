"""BoTorch's fused qLogNEHVI kernel: built at set-up, imported without waiting, never compiled mid-run.

What BoTorch compiles, and why it could hang a machine:
    ``botorch.acquisition.multi_objective.logei`` speeds up the inner loop of
    qLogNEHVI (log areas of the hypervolume cells, about 2x per multi-objective
    proposal here) with a C++ kernel, ``botorch/csrc/logei_fused.cpp``. On a pip
    install it is JIT-compiled the first time a process constructs
    ``qLogNoisyExpectedHypervolumeImprovement``: ``torch.utils.cpp_extension.load(
    name="logei_fused_ext", extra_cflags=["-O3", "-march=native"])`` builds it with
    ninja into the torch extensions cache (``$TORCH_EXTENSIONS_DIR``, else
    ``~/.cache/torch_extensions/py<ver>_cpu/logei_fused_ext``). torch guards that
    folder with a lock file (``FileBaton``) and every later process waits for the
    file to go, without a time limit. A process killed while it holds the lock
    leaves the file behind, and every later multi-objective proposal on the machine
    waits forever in ``FileBaton.wait``.

What cryoopt does instead:
    :func:`build` compiles the kernel at set-up (``python -m cryoopt.optim.fused_kernel
    build``, run by ``scripts/setup.sh``), with BoTorch's own loader, and writes a
    stamp naming what it was built from (source hash, flags, torch, BoTorch, Python,
    CPU) and the library it produced. :func:`prepare`, called before every
    qLogNEHVI, tells BoTorch its loader has run and imports that library only when
    the stamp matches; otherwise BoTorch stays on its pure-Python path, which gives
    the same acquisition values (to ~1e-15) more slowly. Nothing here compiles during
    a run or waits on a lock; :func:`build` waits a bounded time for a concurrent
    build and then raises :class:`KernelLockError` naming the lock file to delete.

Example:
    >>> from cryoopt.optim import fused_kernel
    >>> fused_kernel.status()["state"] in {"ready", "not built", "stale", "locked", "unavailable"}
    True
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from cryoopt.exceptions import OptimizerError

log = logging.getLogger(__name__)

#: the extension BoTorch builds (``torch.utils.cpp_extension.load(name=...)``)
EXTENSION_NAME = "logei_fused_ext"
#: the flags BoTorch passes (``botorch/acquisition/multi_objective/logei.py``)
EXTRA_CFLAGS = ("-O3", "-march=native")
STAMP_NAME = "cryoopt_stamp.json"

__all__ = [
    "EXTENSION_NAME",
    "FusedKernelWarning",
    "KernelLockError",
    "build",
    "build_directory",
    "lock_path",
    "prepare",
    "status",
]


class KernelLockError(OptimizerError, TimeoutError):
    """The extension's build folder stayed locked longer than the wait allowed."""


class FusedKernelWarning(UserWarning):
    """The fused kernel is built but cannot be used now (the pure-Python path is used)."""


def _botorch_module() -> ModuleType | None:
    """BoTorch's multi-objective LogEI module if it has the fused-kernel loader, else None."""
    try:
        import botorch.acquisition.multi_objective.logei as logei
    except ImportError:  # pragma: no cover - BoTorch is a dependency
        return None
    return logei if hasattr(logei, "_try_load_fused_kernel") and hasattr(logei, "_load_attempted") else None


def _source_file(logei: ModuleType) -> Path:
    return (Path(logei.__file__).parent / os.pardir / os.pardir / "csrc" / "logei_fused.cpp").resolve()


def build_directory() -> Path:
    """Where torch builds the extension: torch's own rule (``_get_build_directory``), without creating it."""
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root is None:
        if torch.version.hip is not None:
            accelerator = f"rocm{torch.version.hip.replace('.', '')}"
        elif torch.version.cuda is not None:
            accelerator = f"cu{torch.version.cuda.replace('.', '')}"
        else:
            accelerator = "cpu"
        python = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
        root = os.path.join(get_default_build_root(), f"{python}_{accelerator}")
    return Path(root) / EXTENSION_NAME


def lock_path() -> Path:
    """The lock file torch's ``FileBaton`` creates while it builds or loads the extension."""
    return build_directory() / "lock"


def _library_path() -> Path:
    suffix = ".pyd" if sys.platform == "win32" else ".so"  # torch's LIB_EXT
    return build_directory() / f"{EXTENSION_NAME}{suffix}"


def _cpu_signature() -> str:
    """Identifies the CPU the kernel was built for (``-march=native`` code may not run on another)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        keep = [ln for ln in lines if ln.startswith(("model name", "flags", "Features", "CPU part"))]
        text = "\n".join(dict.fromkeys(keep))  # first occurrence of each distinct line
    except OSError:
        text = f"{platform.machine()} {platform.processor()}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _expected_stamp(logei: ModuleType) -> dict[str, Any]:
    import botorch
    import torch

    return {
        "extension": EXTENSION_NAME,
        "source_sha256": hashlib.sha256(_source_file(logei).read_bytes()).hexdigest(),
        "cflags": list(EXTRA_CFLAGS),
        "torch": torch.__version__,
        "botorch": botorch.__version__,
        "python": platform.python_version(),
        "cpu": _cpu_signature(),
    }


def _library_identity(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def status() -> dict[str, Any]:
    """Whether a run would use the fused kernel, and why not.

    ``state`` is ``ready`` (built for this torch/BoTorch/CPU and unlocked), ``not built``,
    ``stale`` (built from something else: rebuild), ``locked`` (the lock file exists:
    a build is running or was killed) or ``unavailable`` (this BoTorch has no fused
    kernel). Also gives ``build_directory`` and ``lock``.
    """
    logei = _botorch_module()
    if logei is None:
        return {"state": "unavailable", "reason": "this BoTorch has no fused qLogNEHVI kernel"}
    directory, lock, library = build_directory(), lock_path(), _library_path()
    out: dict[str, Any] = {"build_directory": str(directory), "lock": str(lock), "library": str(library)}
    stamp_file = directory / STAMP_NAME
    if not stamp_file.is_file() or not library.is_file():
        return out | {"state": "not built", "reason": "run `python -m cryoopt.optim.fused_kernel build`"}
    try:
        stamp = json.loads(stamp_file.read_text())
    except (OSError, ValueError):
        return out | {"state": "stale", "reason": f"unreadable stamp {stamp_file}"}
    expected = _expected_stamp(logei) | {"library": _library_identity(library)}
    changed = sorted(k for k in expected if stamp.get(k) != expected[k])
    if changed:
        return out | {"state": "stale", "reason": f"built for another {', '.join(changed)}; rebuild it"}
    if lock.exists():
        return out | {"state": "locked", "reason": f"lock file {lock} exists"}
    return out | {"state": "ready", "reason": "built at set-up for this environment"}


def prepare() -> bool:
    """Make sure no qLogNEHVI in this process compiles or waits; use the set-up build if valid.

    Idempotent and quick (no compiler, no lock wait). Returns whether the fused
    kernel is in use; otherwise BoTorch's pure-Python path computes the same values.
    """
    logei = _botorch_module()
    if logei is None:
        return False
    if logei._load_attempted:
        return logei._C is not None
    logei._load_attempted = True  # from here on BoTorch never calls cpp_extension.load
    info = status()
    if info["state"] == "locked":
        import warnings

        warnings.warn(
            f"BoTorch's fused qLogNEHVI kernel is built but its build folder is locked ({info['lock']}): "
            "a build is running or was killed. Using the pure-Python path (same results, slower). If no "
            f"build is running, delete {info['lock']} and run `python -m cryoopt.optim.fused_kernel build`.",
            FusedKernelWarning,
            stacklevel=2,
        )
        return False
    if info["state"] != "ready":
        log.info("fused qLogNEHVI kernel %s (%s): using BoTorch's pure-Python path", info["state"], info["reason"])
        return False
    try:
        spec = importlib.util.spec_from_file_location(EXTENSION_NAME, info["library"])
        if spec is None or spec.loader is None:
            raise ImportError(f"no import spec for {info['library']}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001 - any failure means: use the Python path
        log.warning("could not import the fused qLogNEHVI kernel %s (%s); using the pure-Python path",
                    info["library"], err)
        return False
    logei._C = module
    return True


def build(*, wait_s: float = 120.0) -> Path:
    """Compile BoTorch's fused kernel now (at set-up, never during a run) and stamp it.

    Waits at most ``wait_s`` seconds for a lock left by another build, then raises
    :class:`KernelLockError` naming the file to delete. Raises
    :class:`~cryoopt.exceptions.OptimizerError` when it cannot compile (no C++
    compiler or ninja): runs still work, on the pure-Python path.

    Returns the built library's path.
    """
    if not wait_s >= 0:
        raise ValueError(f"wait_s must be >= 0 seconds, got {wait_s}")
    logei = _botorch_module()
    if logei is None:
        raise OptimizerError("this BoTorch has no fused qLogNEHVI kernel: nothing to build")
    directory, lock = build_directory(), lock_path()
    deadline = time.monotonic() + wait_s
    while lock.exists():
        if time.monotonic() >= deadline:
            raise KernelLockError(
                f"the torch extension lock {lock} has existed for {wait_s:g} s. A build killed earlier leaves "
                f"it behind, and then every process waits on it forever. If no build is running, delete it "
                f"(rm {lock}) and run `python -m cryoopt.optim.fused_kernel build` again."
            )
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0.0)))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / STAMP_NAME).unlink(missing_ok=True)  # a build in progress is never "ready"
    logei._load_attempted, logei._C = False, None
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logei._try_load_fused_kernel()  # exactly what BoTorch compiles, with its flags
    if logei._C is None:
        detail = "; ".join(str(w.message) for w in caught) or "unknown reason"
        raise OptimizerError(f"could not build BoTorch's fused qLogNEHVI kernel in {directory}: {detail}")
    library = _library_path()
    if not library.is_file():
        raise OptimizerError(f"BoTorch built its fused kernel somewhere other than {library}; not stamping it")
    stamp = _expected_stamp(logei) | {"library": _library_identity(library)}
    (directory / STAMP_NAME).write_text(json.dumps(stamp, indent=1))
    return library


def main(argv: list[str] | None = None) -> int:
    """``python -m cryoopt.optim.fused_kernel {build,status}``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cryoopt.optim.fused_kernel", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["build", "status"])
    parser.add_argument("--wait-s", type=float, default=120.0, help="longest wait for another build's lock")
    args = parser.parse_args(argv)
    if args.command == "status":
        print(json.dumps(status(), indent=1))
        return 0
    try:
        path = build(wait_s=args.wait_s)
    except OptimizerError as err:
        print(f"fused qLogNEHVI kernel not built: {err}", file=sys.stderr)
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
