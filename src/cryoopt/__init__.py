"""cryoopt: closed-loop optimization campaigns for CLEM sample preparation.

Importing cryoopt registers its Gymnasium environments (``cryoopt/Sectioning-v0``,
``cryoopt/Staining-v0``, ``cryoopt/StainingDiffusion-v0``, ``cryoopt/CLEMProtocol-v0``).

Public API::

    from cryoopt import SearchSpace, optimize, Campaign, load_config

``Campaign`` and ``load_config`` are imported on first use, so ``import cryoopt``
stays light for scripts that only need the optimizer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cryoopt._env_ids import register_envs
from cryoopt.exceptions import CryoOptError
from cryoopt.space import SearchSpace

__version__ = "0.1.0"

if TYPE_CHECKING:
    from cryoopt.campaign import Campaign
    from cryoopt.config import load_config
    from cryoopt.optim import optimize

_LAZY = {
    "optimize": ("cryoopt.optim", "optimize"),
    "Campaign": ("cryoopt.campaign", "Campaign"),
    "load_config": ("cryoopt.config", "load_config"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    if name in ("optim", "campaign", "envs", "sim", "pipeline", "fusion", "instruments", "agents", "restore"):
        import importlib

        return importlib.import_module(f"cryoopt.{name}")
    raise AttributeError(f"module 'cryoopt' has no attribute {name!r}")


try:  # gymnasium.make("cryoopt/...") works once cryoopt is imported
    register_envs()
except ImportError:  # pragma: no cover - gymnasium is a dependency; tolerate a broken install
    pass

__all__ = ["Campaign", "CryoOptError", "SearchSpace", "__version__", "load_config", "optimize"]
