"""Agents that act within a sample block: protocol, registry, baselines, SB3 and HRL.

================  ===========================================================
name              agent
================  ===========================================================
``random``        :class:`RandomAgent`: random setpoint deltas
``fixed``         :class:`FixedAgent`: the documented expert manual protocol
``bo_only``       :class:`HoldAgent`: holds the outer loop's starting protocol
``ppo``           :class:`FlatPPOAgent`: one SB3 PPO policy on the 13-d action
``sac``           :class:`FlatSACAgent`: one SB3 SAC policy on the 13-d action
``hrl``           :class:`HRLAgent`: option policy (PPO) over per-option SB3 controllers
================  ===========================================================

Example:
    >>> from cryoopt.agents import available_agents, make_agent
    >>> agent = make_agent("hrl", seed=0)
"""

from __future__ import annotations

from cryoopt.agents.base import (
    EXPERT_PROTOCOL,
    Agent,
    BaseAgent,
    agents,
    start_setpoints,
    available_agents,
    make_agent,
    register_agent,
    run_block,
)
from cryoopt.agents.baselines import FixedAgent, HoldAgent, RandomAgent
from cryoopt.agents.hrl import OPTIONS, HRLAgent, OptionEnv, OptionTermination, GroupControlEnv
from cryoopt.agents.sb3 import FlatPPOAgent, FlatSACAgent, MLflowOutputFormat, SB3Agent, configure_mlflow_logger
from cryoopt.agents.starts import RandomStarts

__all__ = [
    "EXPERT_PROTOCOL",
    "OPTIONS",
    "Agent",
    "BaseAgent",
    "FixedAgent",
    "FlatPPOAgent",
    "FlatSACAgent",
    "GroupControlEnv",
    "HRLAgent",
    "HoldAgent",
    "MLflowOutputFormat",
    "OptionEnv",
    "OptionTermination",
    "RandomAgent",
    "RandomStarts",
    "SB3Agent",
    "agents",
    "start_setpoints",
    "available_agents",
    "configure_mlflow_logger",
    "make_agent",
    "register_agent",
    "run_block",
]
