"""Find and read the specimen / scenario presets in the top-level ``envs/`` folder.

Search order: an explicit path, ``$CRYOOPT_ENVS_DIR``, the ``envs/`` folder of the
source checkout this package was imported from, then ``./envs``. Presets are YAML
mappings with ``name``, ``description``, ``tissue`` (see
:class:`~cryoopt.sim.diffusion.TissueProperties`) and ``phantom`` (see
:class:`~cryoopt.sim.specimen.Specimen`).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import yaml

from cryoopt.exceptions import ParameterError


def preset_dirs() -> list[Path]:
    """Folders searched for ``<name>.yaml``, in order."""
    dirs: list[Path] = []
    env = os.environ.get("CRYOOPT_ENVS_DIR")
    if env:
        dirs.append(Path(env))
    here = Path(__file__).resolve()
    for parent in here.parents[:5]:
        if (parent / "envs").is_dir() and (parent / "pyproject.toml").exists():
            dirs.append(parent / "envs")
            break
    dirs.append(Path.cwd() / "envs")
    return dirs


def available_presets() -> list[str]:
    """Names of every preset found."""
    names: set[str] = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.yaml"))
    return sorted(names)


@functools.lru_cache(maxsize=64)
def _load(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ParameterError(f"preset file {path} must hold a mapping")
    return data


def load_preset(name: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the preset mapping for a name (``"neurons"``) or a path to a YAML file.

    Raises:
        ParameterError: no such preset; the message lists the known ones.
    """
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return dict(_load(str(p.resolve())))
    for d in preset_dirs():
        f = d / f"{name}.yaml"
        if f.exists():
            return dict(_load(str(f.resolve())))
    raise ParameterError(
        f"unknown specimen preset {str(name)!r}; available: {', '.join(available_presets()) or '(none found)'}; "
        "set CRYOOPT_ENVS_DIR to the folder holding the preset YAML files"
    )
