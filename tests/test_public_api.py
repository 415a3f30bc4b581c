"""The public contracts of DESIGN.md, checked from a fresh interpreter."""

from __future__ import annotations

import subprocess
import sys


def test_import_cryoopt_registers_envs_without_importing_them() -> None:
    code = (
        "import sys, gymnasium as gym, cryoopt\n"
        "assert 'cryoopt.envs' not in sys.modules\n"
        "ids = [i for i in gym.registry if i.startswith('cryoopt/')]\n"
        "assert set(ids) >= {'cryoopt/Sectioning-v0', 'cryoopt/Staining-v0', 'cryoopt/StainingDiffusion-v0', 'cryoopt/CLEMProtocol-v0'}, ids\n"
        "env = gym.make('cryoopt/Staining-v0')\n"
        "obs, info = env.reset(seed=0)\n"
        "assert env.observation_space.contains(obs)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_top_level_names() -> None:
    import cryoopt
    from cryoopt import CryoOptError, SearchSpace, optimize
    from cryoopt.optim import BayesianOptimizer

    assert callable(optimize) and issubclass(CryoOptError, Exception)
    assert SearchSpace.from_dict({"x": {"type": "float", "low": 0, "high": 1}}).dim == 1
    assert BayesianOptimizer.strategy_name == "bo"
    assert callable(cryoopt.load_config) and isinstance(cryoopt.Campaign, type)
