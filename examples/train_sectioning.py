"""Train a PPO controller on cryoopt/Sectioning-v0 and compare it with a random policy.

Run: ``OMP_NUM_THREADS=1 python examples/train_sectioning.py --steps 20000 --scenario neurons``.
The saved policy is a low-level controller for CLEMProtocol-v0's ``sectioning`` action
slice (same actions and the same first 11 observation features).
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import cryoopt.envs  # noqa: F401  (registers the envs)


def mean_return(policy, *, scenario: str, episodes: int = 10, seed: int = 1000) -> float:
    env = gym.make("cryoopt/Sectioning-v0", scenario=scenario)
    totals = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        done, total = False, 0.0
        while not done:
            obs, r, te, tr, _ = env.step(policy(obs))
            total, done = total + r, te or tr
        totals.append(total)
    return float(np.mean(totals))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=20_000)
    ap.add_argument("--scenario", default="neurons")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-envs", type=int, default=2)
    ap.add_argument("--save", default="sectioning_ppo.zip")
    ap.add_argument("--episodes", type=int, default=10, help="blocks each policy is scored on")
    args = ap.parse_args(argv)

    venv = make_vec_env("cryoopt.envs:cryoopt/Sectioning-v0", n_envs=args.n_envs, seed=args.seed,
                        env_kwargs={"scenario": args.scenario})
    model = PPO("MlpPolicy", venv, seed=args.seed, n_steps=512, batch_size=128, learning_rate=1e-3, verbose=1, device="cpu")
    model.learn(args.steps)
    model.save(args.save)
    rng = np.random.default_rng(args.seed)
    rand = mean_return(lambda o: rng.uniform(-1, 1, 5).astype(np.float32), scenario=args.scenario,
                       episodes=args.episodes)
    trained = mean_return(lambda o: model.predict(o, deterministic=True)[0], scenario=args.scenario,
                          episodes=args.episodes)
    print(f"mean block return: random {rand:.2f}, trained {trained:.2f} (saved {args.save})")


if __name__ == "__main__":
    main()
