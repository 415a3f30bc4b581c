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
``mpc``           :class:`ModelBasedAgent`: GP of the section score, drift tracker,
                  one-step lookahead on the cutting temperature
``compensate``    :class:`DriftCompensationAgent`: hold, with a drift feedforward
                  on the cutting temperature (no learning)
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
from cryoopt.agents.baselines import DriftCompensationAgent, FixedAgent, HoldAgent, RandomAgent
from cryoopt.agents.drift import DRIFT_FEATURES, DriftTracker
from cryoopt.agents.hrl import (
    OPTIONS,
    ControllerView,
    GroupControlEnv,
    HRLAgent,
    InstrumentView,
    OptionEnv,
    OptionTermination,
    regulate_temperatures,
)
from cryoopt.agents.model_based import ModelBasedAgent, SectionScoreModel
from cryoopt.agents.sb3 import FlatPPOAgent, FlatSACAgent, MLflowOutputFormat, SB3Agent, configure_mlflow_logger
from cryoopt.agents.starts import RandomStarts

__all__ = [
    "DRIFT_FEATURES",
    "EXPERT_PROTOCOL",
    "OPTIONS",
    "Agent",
    "BaseAgent",
    "ControllerView",
    "DriftCompensationAgent",
    "DriftTracker",
    "FixedAgent",
    "FlatPPOAgent",
    "FlatSACAgent",
    "GroupControlEnv",
    "HRLAgent",
    "HoldAgent",
    "InstrumentView",
    "MLflowOutputFormat",
    "ModelBasedAgent",
    "OptionEnv",
    "OptionTermination",
    "RandomAgent",
    "RandomStarts",
    "SB3Agent",
    "SectionScoreModel",
    "agents",
    "start_setpoints",
    "available_agents",
    "configure_mlflow_logger",
    "make_agent",
    "regulate_temperatures",
    "register_agent",
    "run_block",
]
