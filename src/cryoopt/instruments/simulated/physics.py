"""Physics backends of the simulated devices: small Protocols, dicts and arrays in and out.

A backend is one method. The simulator issue plugs ``cryoopt.sim`` models in here by
registering an object with the same method under a new name; until then the
``"default"`` backends below are simple, documented response models.

- :class:`SectioningPhysics` ``.cut(setpoints, rng) -> dict`` of section features.
  ``setpoints`` holds the ultramicrotome setpoints plus ``knife_wear`` (cuts on the
  edge segment) and the measured temperatures ``measured_*_c``.
- :class:`StainingPhysics` ``.run(protocol, rng, *, section) -> dict`` of staining
  features; ``protocol`` is a list of step dicts (``StainStep`` fields), ``section`` the
  features of the section being stained (``{}`` if none).
- :class:`ImagingPhysics` ``.acquire(settings, rng, *, sample) -> np.ndarray`` (2-D,
  ``uint16``); ``settings`` are the microscope setpoints, ``sample`` the merged
  section + staining features.

Everything random comes from ``rng`` (a seeded ``numpy.random.Generator``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from cryoopt.registry import Registry

__all__ = [
    "DefaultImaging",
    "DefaultSectioning",
    "DefaultStaining",
    "ImagingPhysics",
    "SectioningPhysics",
    "StainingPhysics",
    "imaging_backends",
    "sectioning_backends",
    "staining_backends",
]


@runtime_checkable
class SectioningPhysics(Protocol):
    def cut(self, setpoints: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]: ...


@runtime_checkable
class StainingPhysics(Protocol):
    def run(self, protocol: Sequence[Mapping[str, Any]], rng: np.random.Generator, *,
            section: Mapping[str, Any]) -> dict[str, float]: ...


@runtime_checkable
class ImagingPhysics(Protocol):
    def acquire(self, settings: Mapping[str, Any], rng: np.random.Generator, *,
                sample: Mapping[str, Any]) -> np.ndarray: ...


sectioning_backends: Registry[Any] = Registry("sectioning physics backend")
staining_backends: Registry[Any] = Registry("staining physics backend")
imaging_backends: Registry[Any] = Registry("imaging physics backend")


@sectioning_backends.register("default")
class DefaultSectioning:
    """Section quality from thickness, speed, temperature and knife wear.

    Response model (all features in [0, 1] except thicknesses):

    - ``actual_thickness_nm = t * (1 + 0.03 z)``, ``z ~ N(0, 1)``, plus 0.2 nm/cut of wear;
    - ``chatter = sigmoid((v - 2.5 - t/200) / 0.6)`` (fast cuts through thin sections rattle);
    - ``compression = clip(0.05 + 0.02 v + 0.001 (T_specimen + 120)^2 / 10 + 0.002 wear, 0, 1)``
      (warmer than -120 degC or a dull knife compresses);
    - ``crack_fraction = sigmoid((-T_specimen - 150) / 8) * t / 300`` (too cold and thick cracks);
    - ``knife_marks = 1 - exp(-wear / 300)``;
    - ``quality = (1 - chatter)(1 - compression)(1 - crack_fraction)(1 - 0.5 knife_marks)``.
    """

    def cut(self, setpoints: Mapping[str, Any], rng: np.random.Generator) -> dict[str, float]:
        t = float(setpoints.get("section_thickness_nm", 100.0))
        v = float(setpoints.get("cutting_speed_mm_s", 1.0))
        temp = float(setpoints.get("measured_specimen_temperature_c", setpoints.get("specimen_temperature_c", -120.0)))
        wear = float(setpoints.get("knife_wear", 0.0))
        if str(setpoints.get("mode", "SECT")).upper() == "TRIM":
            return {"actual_thickness_nm": t, "trimmed": 1.0, "quality": 0.0}

        def sig(x: float) -> float:
            return 1.0 / (1.0 + math.exp(-x))

        actual = t * (1.0 + 0.03 * rng.standard_normal()) + 0.2 * wear
        chatter = sig((v - 2.5 - t / 200.0) / 0.6)
        compression = float(np.clip(0.05 + 0.02 * v + 0.001 * (temp + 120.0) ** 2 / 10.0 + 0.002 * wear, 0, 1))
        cracks = float(np.clip(sig((-temp - 150.0) / 8.0) * t / 300.0, 0, 1))
        marks = 1.0 - math.exp(-wear / 300.0)
        quality = (1 - chatter) * (1 - compression) * (1 - cracks) * (1 - 0.5 * marks)
        return {
            "actual_thickness_nm": float(max(actual, 1.0)),
            "chatter": float(chatter),
            "compression": compression,
            "crack_fraction": cracks,
            "knife_marks": float(marks),
            "quality": float(quality),
        }


@staining_backends.register("default")
class DefaultStaining:
    """Label intensity, uniformity and background from a protocol.

    For each step with a labelling reagent (``PRIMARY``, ``SECONDARY``, ``UA``, ``LEAD``):
    concentration ``c = 1/dilution``; diffusion length
    ``L = sqrt(D t)`` with ``D = 1e3 nm^2/s * exp(0.03 (T - 22))``; penetration is the
    fraction ``min(1, 2L/thickness)`` of the section reached; bound label accumulates as
    ``c * (1 - exp(-t_min/30)) * penetration``. Washes remove unbound label:
    ``background = sum(c_i) * 0.5^washes``. Outputs ``label_intensity``, ``uniformity``
    (mean penetration over labelling steps), ``background``, ``penetration_depth_nm``.
    """

    labels = ("PRIMARY", "SECONDARY", "UA", "LEAD")

    def run(self, protocol: Sequence[Mapping[str, Any]], rng: np.random.Generator, *,
            section: Mapping[str, Any]) -> dict[str, float]:
        thickness = float(section.get("actual_thickness_nm", 100.0))
        intensity, background, pens, depth = 0.0, 0.0, [], 0.0
        washes = 0
        for step in protocol:
            washes += int(step.get("wash_cycles", 0))
            if str(step.get("reagent", "")).upper() not in self.labels:
                continue
            c = 1.0 / float(step.get("dilution", 1.0))
            t_s = 60.0 * float(step.get("time_min", 0.0))
            d = 1e3 * math.exp(0.03 * (float(step.get("temperature_c", 22.0)) - 22.0))
            agit = 1.0 + float(step.get("agitation_rpm", 0.0)) / 1000.0
            length = math.sqrt(d * t_s * agit)
            pen = min(1.0, 2.0 * length / max(thickness, 1.0))
            pens.append(pen)
            depth = max(depth, length)
            intensity += 100.0 * c * (1.0 - math.exp(-t_s / 1800.0)) * pen
            background += 100.0 * c * 0.5 ** washes
        noise = 1.0 + 0.02 * rng.standard_normal()
        return {
            "label_intensity": float(min(intensity * noise, 1.0)),
            "uniformity": float(np.mean(pens)) if pens else 0.0,
            "background": float(min(background, 1.0)),
            "penetration_depth_nm": float(depth),
        }


@imaging_backends.register("default")
class DefaultImaging:
    """A seeded blob phantom imaged with blur, signal scaling and Poisson-Gaussian noise.

    ``signal = label_intensity * exposure_ms * gain * 4`` (counts) on blobs, plus
    ``background * exposure_ms * gain`` everywhere; defocus ``|focus_um - 0|`` blurs with a
    box of ``1 + 2 |dz|`` pixels; ``quality`` < 1 multiplies contrast; Poisson shot noise
    then Gaussian read noise (sigma 2 counts); clipped to ``uint16``. EM uses
    ``quality`` as contrast and ignores the label. The phantom layout is drawn from
    ``rng`` so it depends on the device seed only.
    """

    def acquire(self, settings: Mapping[str, Any], rng: np.random.Generator, *,
                sample: Mapping[str, Any]) -> np.ndarray:
        n = int(settings.get("image_size_px", 128))
        expo = float(settings.get("exposure_ms", 50.0))
        gain = float(settings.get("gain", 1.0))
        dz = abs(float(settings.get("focus_um", 0.0)) - float(settings.get("best_focus_um", 0.0)))
        em = str(settings.get("modality", "LM")).upper() == "EM"
        yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
        phantom = np.zeros((n, n), np.float32)
        layout = np.random.default_rng(int(settings.get("layout_seed", 0)))
        for _ in range(max(3, n // 16)):
            cy, cx = layout.uniform(0, n, 2)
            r = layout.uniform(n / 40, n / 12)
            phantom += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r))
        phantom = np.clip(phantom, 0, 1)
        k = int(1 + 2 * min(dz, n / 8))
        if k > 1:
            kern = np.ones(k, np.float32) / k
            phantom = np.apply_along_axis(lambda r: np.convolve(r, kern, mode="same"), 0, phantom)
            phantom = np.apply_along_axis(lambda r: np.convolve(r, kern, mode="same"), 1, phantom)
        quality = float(sample.get("quality", 1.0))
        if em:
            mean = expo * gain * (20.0 + 80.0 * quality * phantom)
        else:
            label = float(sample.get("label_intensity", 0.5))
            bg = float(sample.get("background", 0.05))
            mean = expo * gain * (4.0 * label * quality * phantom + bg + 0.01)
        img = rng.poisson(np.maximum(mean, 0)).astype(np.float64) + rng.normal(0, 2.0, mean.shape)
        return np.clip(img, 0, 65535).astype(np.uint16)
