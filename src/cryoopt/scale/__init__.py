"""Scale out: run a campaign's trials on several benches of a Ray cluster, and sweep seeds.

- :mod:`cryoopt.scale.options`: the ``ray`` campaign executor's settings (light, no Ray).
"""

from __future__ import annotations
