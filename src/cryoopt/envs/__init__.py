"""Gymnasium environments over the instrument drivers and simulators, registered under ``cryoopt/``.

====================================  =========================================  ====================
id                                    one step                                   max_episode_steps
====================================  =========================================  ====================
``cryoopt/Sectioning-v0``             cut one serial section                     50
``cryoopt/Staining-v0``               stain one section on the platform          20
``cryoopt/StainingDiffusion-v0``      evaluate a protocol with the simulator     20
``cryoopt/CLEMProtocol-v0``           cut, stain, image LM+EM, score, fuse       20
====================================  =========================================  ====================

Registration happens on ``import cryoopt.envs``. Without importing first, use
Gymnasium's module prefix: ``gymnasium.make("cryoopt.envs:cryoopt/Staining-v0")``.

Every env takes ``scenario=`` (see :mod:`cryoopt.envs.scenarios`), ``backend=``
(``"direct"`` fast simulators, ``"instruments"`` drivers over in-process simulated
devices, ``"socket"`` drivers over TCP-simulated devices; see :mod:`cryoopt.envs._core`)
and ``bench=`` (your own instruments, with ``backend="instruments"``).

Example:
    >>> import gymnasium as gym, cryoopt.envs
    >>> env = gym.make("cryoopt/Sectioning-v0", scenario="neurons")
    >>> obs, info = env.reset(seed=0)
"""

from __future__ import annotations

from cryoopt._env_ids import ENV_SPECS, register_envs
from cryoopt.envs.clem import CLEMProtocolEnv
from cryoopt.envs.scenarios import Scenario, available_scenarios, load_scenario
from cryoopt.envs.sectioning import SectioningEnv
from cryoopt.envs.staining import StainingDiffusionEnv, StainingEnv

__all__ = [
    "ENV_IDS",
    "CLEMProtocolEnv",
    "Scenario",
    "SectioningEnv",
    "StainingDiffusionEnv",
    "StainingEnv",
    "available_scenarios",
    "load_scenario",
]

ENV_IDS = tuple(ENV_SPECS)

register_envs()
