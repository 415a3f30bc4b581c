"""SB3 smoke trainings on every env, and learning on Sectioning-v0 (trained beats random, several seeds)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch

import cryoopt.envs  # noqa: F401  (registers the envs)
from cryoopt.envs import ENV_IDS

torch.set_num_threads(1)

SMOKE_KW = {"cryoopt/CLEMProtocol-v0": {"image_size": 64}}


@pytest.mark.parametrize("algo", ["PPO", "SAC"])
@pytest.mark.parametrize("env_id", ENV_IDS)
def test_sb3_smoke_training(env_id, algo):
    import stable_baselines3 as sb3

    env = gym.make(env_id, **SMOKE_KW.get(env_id, {}))
    if algo == "PPO":
        model = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    else:
        model = sb3.SAC("MlpPolicy", env, learning_starts=32, batch_size=32, buffer_size=256, seed=0, device="cpu")
    model.learn(128 if "CLEM" not in env_id else 64)
    obs, _ = env.reset(seed=0)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    env.close()


def _mean_return(policy, seed: int, episodes: int = 10) -> float:
    env = gym.make("cryoopt/Sectioning-v0")
    returns = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=1000 + 100 * seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, te, tr, _ = env.step(policy(obs))
            total += r
            done = te or tr
        returns.append(total)
    env.close()
    return float(np.mean(returns))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ppo_learns_sectioning(seed):
    """PPO (2048 steps: four rollouts of 512) beats a uniform random policy on held-out blocks, per seed.

    Measured (mean return over 10 blocks, random / trained at 2048 steps; at 4096 steps):
    seed 0: -1.3 / 1.9 (2.5), seed 1: 0.6 / 3.4 (5.7), seed 2: 0.5 / 6.9 (6.8); the margin over
    random is 2.8-6.3 at 2048 steps against the 1.0 asked (3.8-6.3 at 4096, for twice the time).
    """
    from stable_baselines3 import PPO

    env = gym.make("cryoopt/Sectioning-v0")
    model = PPO("MlpPolicy", env, seed=seed, n_steps=512, batch_size=128, learning_rate=1e-3, n_epochs=10, device="cpu")
    model.learn(2048)
    rng = np.random.default_rng(seed)
    random_return = _mean_return(lambda o: rng.uniform(-1, 1, 5).astype(np.float32), seed)
    trained_return = _mean_return(lambda o: model.predict(o, deterministic=True)[0], seed)
    assert trained_return > random_return + 1.0, (trained_return, random_return)
