"""The simulated world: staining physics, sectioning defects, specimens, LM/EM images.

Modules:
    diffusion: antibody diffusion-reaction staining (FEM, scikit-fem or dolfinx).
    fast: tabulated fast path of the staining model for RL environments.
    labelling: non-specific background of on-section immunolabelling.
    sectioning: Tokuyasu cryo-ultramicrotomy: section quality, knife and temperature drift, depth.
    specimen: seeded 3-D phantoms and serial-section ground truth.
    imaging: light and electron image formation with artifacts.
    analytic: closed-form solutions the solvers are checked against.
"""

from __future__ import annotations

from cryoopt.sim.diffusion import (
    StainingProtocol,
    StainingResult,
    TissueProperties,
    solve_staining,
    time_to_uniformity,
)

__all__ = [
    "StainingProtocol",
    "StainingResult",
    "TissueProperties",
    "solve_staining",
    "time_to_uniformity",
]

from cryoopt.sim.fast import StainingSummary, fast_staining  # noqa: E402
from cryoopt.sim.imaging import IceContamination, MicroscopeImage, image_em, image_lm  # noqa: E402
from cryoopt.sim.labelling import NonspecificBinding, nonspecific_label_um  # noqa: E402
from cryoopt.sim.sectioning import SectionQuality, SectioningModel, SectioningSetpoints, optimal_cutting_temperature_c  # noqa: E402
from cryoopt.sim.specimen import SectionTruth, Specimen, lm_to_em_transform  # noqa: E402

__all__ += [
    "StainingSummary",
    "fast_staining",
    "IceContamination",
    "MicroscopeImage",
    "NonspecificBinding",
    "nonspecific_label_um",
    "optimal_cutting_temperature_c",
    "image_em",
    "image_lm",
    "SectionQuality",
    "SectioningModel",
    "SectioningSetpoints",
    "SectionTruth",
    "Specimen",
    "lm_to_em_transform",
]
