"""The Gymnasium ids cryoopt registers: id -> (entry point, max_episode_steps).

Kept in a module with no imports so that ``import cryoopt`` can register every env
(``gymnasium.make("cryoopt/Staining-v0")`` then works) without importing the envs.
"""

from __future__ import annotations

ENV_SPECS: dict[str, tuple[str, int]] = {
    "cryoopt/Sectioning-v0": ("cryoopt.envs.sectioning:SectioningEnv", 50),
    "cryoopt/Staining-v0": ("cryoopt.envs.staining:StainingEnv", 20),
    "cryoopt/StainingDiffusion-v0": ("cryoopt.envs.staining:StainingDiffusionEnv", 20),
    "cryoopt/CLEMProtocol-v0": ("cryoopt.envs.clem:CLEMProtocolEnv", 20),
}


def register_envs() -> None:
    """Register every cryoopt env with Gymnasium (idempotent)."""
    from gymnasium.envs.registration import register, registry

    for env_id, (entry_point, max_steps) in ENV_SPECS.items():
        if env_id not in registry:
            register(id=env_id, entry_point=entry_point, max_episode_steps=max_steps)
