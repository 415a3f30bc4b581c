"""The estimate path knows the open-beam intensity the simulated microscope imaged the section with."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cryoopt.envs.clem import CLEMProtocolEnv


def _env(**kwargs) -> CLEMProtocolEnv:
    return CLEMProtocolEnv(scenario="neurons", image_size=64, backend="direct", **kwargs)


def test_open_beam_is_the_intensity_bare_material_transmits_from() -> None:
    """Beer-Lambert in the simulator: the gelatin matrix around the cells reads the open beam
    times exp(-1.2 density x thickness / 100 nm x stain contrast)."""
    env = _env(structures="estimate", registration="estimate")
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        ref = env._open_beam_intensity()
        assert env.open_beam and ref is not None
        scope = env.chain.physics["microscope"]
        img, truth = scope.last_image, scope.last_truth
        matrix = (truth.cells == 0) & (truth.density > 0)
        assert matrix.mean() > 0.1
        mass = float(np.median(truth.density[matrix])) * truth.thickness_nm / 100.0 * img.truth.params["stain_contrast"]
        measured = float(np.median(img.image[matrix]))
        assert measured / ref == pytest.approx(math.exp(-1.2 * mass), rel=0.05)
    finally:
        env.close()


@pytest.mark.parametrize(("kwargs", "on"), [
    ({"structures": "estimate", "registration": "estimate"}, True),  # a real bench knows it: on by default
    ({"structures": "estimate", "registration": "estimate", "open_beam": False}, False),
    ({"structures": "known", "registration": "known", "open_beam": True}, False),  # known masks need none
])
def test_open_beam_is_on_only_for_estimated_structures(kwargs: dict, on: bool) -> None:
    env = _env(**kwargs)
    try:
        env.reset(seed=0)
        env.step(np.zeros(env.action_space.shape, np.float32))
        assert (env._open_beam_intensity() is not None) is on
    finally:
        env.close()


def test_open_beam_must_be_a_flag() -> None:
    with pytest.raises(ValueError, match="open_beam"):
        _env(structures="estimate", open_beam="yes")
