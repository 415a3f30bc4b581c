"""Render LM and EM images of one neuronal section for a good and a bad protocol to PNG.

Good: 80 nm section, 1:200 antibody for 60 min, clean EM. Bad: 250 nm section,
1:5000 antibody for 5 min, charging, ice contamination, drift and scan noise.
Both sections are the ones centred nearest one depth (``DEPTH_NM``) and the LM panels share
one colour scale, so the difference is the protocol's.
Run: ``python examples/sim_gallery.py [out.png]``
"""

from __future__ import annotations

import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cryoopt.sim import IceContamination, Specimen, StainingProtocol, fast_staining, image_em, image_lm  # noqa: E402


DEPTH_NM = 1125.0  # both sections are the ones centred nearest this depth (1160 and 1125 nm)


def main(out: str = "sim_gallery.png") -> None:
    spec = Specimen.from_preset("neurons", seed=0)
    cx, cy = spec.cells.ellipsoids[0][:2]
    cases = {
        "good": (StainingProtocol(section_thickness_nm=80, antibody_dilution=200, incubation_min=60), {}),
        "bad": (
            StainingProtocol(section_thickness_nm=250, antibody_dilution=5000, incubation_min=5),
            {"charging": 2.0, "ice": IceContamination(coverage=0.08, mean_radius_nm=500), "drift_nm_per_line": 0.5, "scan_noise": 0.8},
        ),
    }
    fig, axes = plt.subplots(2, 2, figsize=(10, 10))
    images = {}
    for name, (protocol, em_kw) in cases.items():
        stain = fast_staining(protocol, tissue=spec.tissue)
        t = protocol.section_thickness_nm
        index = max(int(round(DEPTH_NM / t - 0.5)), 0)  # section k is centred at (k + 0.5) t
        lm = image_lm(spec.section(index, thickness_nm=t, shape=(512, 512), pixel_size_nm=100, n_planes=1), stain, microscope="confocal", rng=0)
        em = image_em(spec.section(index, thickness_nm=t, shape=(512, 512), pixel_size_nm=20, origin_nm=(cx - 5000, cy - 5000)), rng=0, **em_kw)
        images[name] = (stain, t, (index + 0.5) * t, lm, em)
    lm_lo = min(float(np.percentile(v[3].image, 0.5)) for v in images.values())
    lm_hi = max(float(np.percentile(v[3].image, 99.9)) for v in images.values())
    for row, (name, (stain, t, z, lm, em)) in enumerate(images.items()):
        axes[row, 0].imshow(lm.image, cmap="magma", vmin=lm_lo, vmax=lm_hi)
        axes[row, 0].set_title(f"{name}: LM confocal, label {stain.mean_label:.2f}, z {z:.0f} nm")
        axes[row, 1].imshow(em.image, cmap="gray", vmin=0.0, vmax=1.2)
        axes[row, 1].set_title(f"{name}: EM {t:.0f} nm, z {z:.0f} nm")
        for ax in axes[row]:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:])
