"""On-section labelling: kinetics near saturation in the published incubation times, and the
non-specific background (concentration, time, washes).

Published practice: primaries at 1:50-1:100 for 20-60 min on thawed cryosections (Slot &
Geuze, Nat. Protoc. 2, 2480 (2007); Peters & Pierson, Methods Cell Biol. 88, 131 (2008)),
1 mg/ml IgG stocks.
"""

from __future__ import annotations

import pytest

from cryoopt.exceptions import ParameterError
from cryoopt.sim.diffusion import StainingProtocol, TissueProperties
from cryoopt.sim.fast import fast_staining
from cryoopt.sim.labelling import NonspecificBinding, nonspecific_label_um


def _protocol(dilution: float, minutes: float, washes: int = 3, temperature_c: float = 22.0) -> StainingProtocol:
    return StainingProtocol(section_thickness_nm=70, antibody_dilution=dilution, incubation_min=minutes,
                            temperature_c=temperature_c, wash_cycles=washes, wash_min=1.0)


@pytest.mark.parametrize("preset", ["neurons", "tissue_block"])
def test_usual_primary_incubations_are_near_not_far_past_saturation(preset: str) -> None:
    tissue = TissueProperties.from_preset(preset)

    def label(dilution: float, minutes: float) -> float:
        return fast_staining(_protocol(dilution, minutes, washes=0), tissue=tissue).mean_label

    plateau = label(50, 2000)
    for dilution in (50, 100):
        assert 0.6 * plateau < label(dilution, 20) < 0.98 * plateau  # 20 min: approaching, not there
        assert label(dilution, 60) > 0.85 * plateau  # 60 min: near saturation
        assert label(dilution, 60) > label(dilution, 20) * 1.03  # and still gaining
    assert label(1000, 30) < 0.5 * plateau  # a 1:1000 primary is far from saturated in 30 min


def test_background_grows_with_concentration_and_time_and_falls_with_washes() -> None:
    assert nonspecific_label_um(_protocol(50, 30)) > 1.8 * nonspecific_label_um(_protocol(100, 30))
    assert nonspecific_label_um(_protocol(100, 120)) > nonspecific_label_um(_protocol(100, 30)) > nonspecific_label_um(_protocol(100, 5))
    washed = [nonspecific_label_um(_protocol(100, 30, washes=n)) for n in (0, 1, 3, 6)]
    assert washed == sorted(washed, reverse=True) and washed[-1] < 0.5 * washed[0]
    # warmer: faster adsorption during the incubation (and faster wash-out after it)
    assert nonspecific_label_um(_protocol(100, 30, washes=0, temperature_c=37)) > nonspecific_label_um(_protocol(100, 30, washes=0, temperature_c=15))


def test_background_against_the_specific_label_of_the_preset() -> None:
    # at the usual 1:100, washed, a few per cent of the specific label density; at 1:20 unwashed most of it
    tissue = TissueProperties.from_preset("neurons")

    def ratio(dilution: float, washes: int = 3) -> float:
        p = _protocol(dilution, 30, washes=washes)
        return nonspecific_label_um(p) / (fast_staining(p, tissue=tissue).mean_label * tissue.site_density_um)

    assert 0.01 < ratio(100) < 0.04 < ratio(100, washes=0) < 0.1
    assert ratio(20, washes=0) > 0.15
    assert ratio(1000) < ratio(100)


def test_reversible_background_washes_out_at_its_off_rate() -> None:
    import math

    b = NonspecificBinding(adsorption_per_s=0.0)
    before = nonspecific_label_um(_protocol(100, 30, washes=0, temperature_c=20.0), b)  # the reference temperature
    after = nonspecific_label_um(_protocol(100, 30, washes=4, temperature_c=20.0), b)
    assert after == pytest.approx(before * math.exp(-b.k_off_per_s * 4 * 60), rel=1e-9)


def test_bad_nonspecific_properties_are_refused() -> None:
    with pytest.raises(ParameterError, match="kd_um"):
        NonspecificBinding(kd_um=-1.0)
    with pytest.raises(ParameterError, match="unknown nonspecific"):
        NonspecificBinding.from_dict({"stickiness": 3})
