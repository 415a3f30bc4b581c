"""``cryoopt serve DIR``: a live page for one campaign (needs the ``[ui]`` extra: FastAPI, uvicorn, plotly).

The page shows the recommended protocol, the trials, convergence, the Pareto front,
parameter effects and each section's LM/EM images with their scores; the operator
rates sections, injects protocols and pauses the campaign from it. It updates by
itself (server-sent events) while a campaign runs in another process.

This package sits above :mod:`cryoopt.campaign`; nothing below imports it.

Example:
    >>> from cryoopt.ui import create_app, serve
    >>> serve("runs/sim_clem", port=8765)         # then open http://127.0.0.1:8765/
"""

from __future__ import annotations

from cryoopt.ui.app import create_app, serve

__all__ = ["create_app", "serve"]
