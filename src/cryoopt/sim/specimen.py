"""Seeded 3-D specimen phantoms and the ground truth of serial sections through them.

A specimen is a set of analytic 3-D shapes (ellipsoid somata and nuclei, capsule
neurites and mitochondria, spherical labelled targets) drawn once from a seed and
a preset in ``envs/``; a nucleus carries its double envelope, pores and chromatin
(:mod:`cryoopt.sim.nucleus`). A section is a slab ``[z_top, z_top + t)`` in z (:meth:`Specimen.section_at`;
:meth:`Specimen.section` is the constant-thickness series ``z_top = index * t``),
rasterised on any pixel grid, so adjacent sections are consistent and an LM field
and an EM field of the same section share coordinates.

Example:
    >>> spec = Specimen.from_preset("neurons", seed=0)
    >>> truth = spec.section(10, thickness_nm=100, shape=(256, 256), pixel_size_nm=200)
    >>> truth.cells.shape
    (256, 256)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cryoopt.exceptions import ParameterError
from cryoopt.sim._validation import as_generator, check_int, check_range
from cryoopt.sim.diffusion import TissueProperties
from cryoopt.sim.nucleus import NuclearEnvelope
from cryoopt.sim.presets import load_preset

__all__ = ["Specimen", "SectionTruth", "pixel_affine", "lm_to_em_transform"]

#: Stain-binding density of a pixel by its structures, indexed by ``cell | nuc << 1 | mito << 2 | membrane << 3``
#: (``0.25 cell + 0.15 nucleus + 0.3 mitochondrion + 0.5 membrane``, float64 as the sum it replaces).
#: Nuclei are drawn over it by :mod:`cryoopt.sim.nucleus` (envelope, pores, chromatin), so
#: :meth:`Specimen.section_at` indexes it with the nucleus bit clear.
_DENSITY = np.array([0.25 * (k & 1) + 0.15 * (k >> 1 & 1) + 0.3 * (k >> 2 & 1) + 0.5 * (k >> 3 & 1) for k in range(16)])


def pixel_affine(origin_nm: tuple[float, float], pixel_size_nm: float, rotation_deg: float = 0.0) -> np.ndarray:
    """3x3 matrix mapping pixel ``(col, row, 1)`` (pixel centres) to specimen ``(x_nm, y_nm, 1)``."""
    c, s = math.cos(math.radians(rotation_deg)), math.sin(math.radians(rotation_deg))
    return np.array(
        [[pixel_size_nm * c, -pixel_size_nm * s, origin_nm[0]], [pixel_size_nm * s, pixel_size_nm * c, origin_nm[1]], [0, 0, 1.0]]
    )


def lm_to_em_transform(lm: SectionTruth, em: SectionTruth) -> np.ndarray:
    """3x3 matrix mapping LM pixel ``(col, row, 1)`` to EM pixel coordinates of the same point."""
    return np.linalg.inv(em.affine) @ lm.affine


@dataclass
class SectionTruth:
    """Ground truth of one section on one pixel grid.

    Attributes:
        index: Section number in the series.
        z_nm: Centre of the section, nm.
        thickness_nm: Section thickness, nm.
        pixel_size_nm: Pixel size, nm.
        affine: Pixel ``(col, row, 1)`` -> specimen ``(x_nm, y_nm, 1)``.
        cells: Instance map of cells (0 = outside, k = cell k).
        nuclei, mitochondria, membranes, targets: Boolean masks at the mid-plane.
        density: Projected stain-binding material density through the section (0-1, float32),
            membranes highest, used for EM contrast.
        target_density: Fraction of the section thickness occupied by labelled targets.
    """

    index: int
    z_nm: float
    thickness_nm: float
    pixel_size_nm: float
    affine: np.ndarray
    cells: np.ndarray
    nuclei: np.ndarray
    mitochondria: np.ndarray
    membranes: np.ndarray
    targets: np.ndarray
    density: np.ndarray
    target_density: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.masks = {
            "cells": self.cells > 0,
            "nuclei": self.nuclei,
            "mitochondria": self.mitochondria,
            "membranes": self.membranes,
            "targets": self.targets,
        }

    @property
    def shape(self) -> tuple[int, int]:
        """Pixel grid ``(H, W)``."""
        return self.cells.shape  # type: ignore[return-value]


@dataclass
class _Shapes:
    """Ellipsoids ``(cx, cy, cz, a, b, c, angle)`` and capsules ``(x0, y0, z0, x1, y1, z1, r)`` with owners."""

    ellipsoids: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    capsules: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    e_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    c_owner: np.ndarray = field(default_factory=lambda: np.zeros(0, int))


def _meets(inv: np.ndarray, xmin: np.ndarray, xmax: np.ndarray, ymin: np.ndarray, ymax: np.ndarray, W: int, H: int) -> np.ndarray:
    """Whether each specimen box's pixel window (as ``_depth_map``'s ``window``) is non-empty.

    A cheap vectorized pre-filter: the per-shape loop still computes the exact window,
    so shapes kept here and then found empty are skipped there (same result)."""
    cols = [inv[0, 0] * x + inv[0, 1] * y + inv[0, 2] for x, y in ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax))]
    rows = [inv[1, 0] * x + inv[1, 1] * y + inv[1, 2] for x, y in ((xmin, ymin), (xmin, ymax), (xmax, ymin), (xmax, ymax))]
    c0 = np.floor(np.minimum.reduce(cols)) - 1
    c1 = np.ceil(np.maximum.reduce(cols)) + 2
    r0 = np.floor(np.minimum.reduce(rows)) - 1
    r1 = np.ceil(np.maximum.reduce(rows)) + 2
    return (np.maximum(c0, 0) < np.minimum(c1, W)) & (np.maximum(r0, 0) < np.minimum(r1, H))


def _depth_map(shapes: _Shapes, X: np.ndarray, Y: np.ndarray, z: float, inv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth inside the union of ``shapes`` (nm, <= 0 outside) and the owner of each pixel at plane ``z``."""
    H, W = X.shape
    depth = np.full((H, W), -np.inf, dtype=np.float32)
    owner = np.zeros((H, W), dtype=np.int32)

    def window(xmin: float, xmax: float, ymin: float, ymax: float) -> tuple[slice, slice] | None:
        corners = np.array([[xmin, ymin, 1], [xmin, ymax, 1], [xmax, ymin, 1], [xmax, ymax, 1]]).T
        px = inv @ corners
        c0, c1 = int(math.floor(px[0].min())) - 1, int(math.ceil(px[0].max())) + 2
        r0, r1 = int(math.floor(px[1].min())) - 1, int(math.ceil(px[1].max())) + 2
        c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, W), min(r1, H)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    E, C = shapes.ellipsoids, shapes.capsules
    if len(E):  # shapes cut by plane z whose bounding box meets the grid, found at once
        dz_all = (z - E[:, 2]) / E[:, 5]
        keep = np.abs(dz_all) < 1.0
        r_all = np.maximum(E[:, 3], E[:, 4]) * np.sqrt(np.maximum(1.0 - dz_all * dz_all, 0.0))
        keep &= _meets(inv, E[:, 0] - r_all, E[:, 0] + r_all, E[:, 1] - r_all, E[:, 1] + r_all, W, H)
        e_idx = np.flatnonzero(keep)
    else:
        e_idx = np.zeros(0, int)
    if len(C):
        lo_z, hi_z = np.minimum(C[:, 2], C[:, 5]) - C[:, 6], np.maximum(C[:, 2], C[:, 5]) + C[:, 6]
        keep = (z >= lo_z) & (z <= hi_z)
        keep &= _meets(inv, np.minimum(C[:, 0], C[:, 3]) - C[:, 6], np.maximum(C[:, 0], C[:, 3]) + C[:, 6],
                       np.minimum(C[:, 1], C[:, 4]) - C[:, 6], np.maximum(C[:, 1], C[:, 4]) + C[:, 6], W, H)
        c_idx = np.flatnonzero(keep)
    else:
        c_idx = np.zeros(0, int)
    for (cx, cy, cz, a, b, c, ang), own in zip(E[e_idx], shapes.e_owner[e_idx]):
        dz = (z - cz) / c
        if abs(dz) >= 1.0:
            continue
        s = math.sqrt(1.0 - dz * dz)
        r = max(a, b) * s
        win = window(cx - r, cx + r, cy - r, cy + r)
        if win is None:
            continue
        xs, ys = X[win] - cx, Y[win] - cy
        ca, sa = math.cos(ang), math.sin(ang)
        u, v = (ca * xs + sa * ys) / (a * s), (-sa * xs + ca * ys) / (b * s)
        d = (1.0 - np.sqrt(u * u + v * v)) * (min(a, b) * s)
        dv, ov = depth[win], owner[win]  # views: update in place
        ov[(d > dv) & (d > 0)] = own
        np.maximum(dv, d, out=dv)
    for (x0, y0, z0, x1, y1, z1, r), own in zip(C[c_idx], shapes.c_owner[c_idx]):
        if z < min(z0, z1) - r or z > max(z0, z1) + r:
            continue
        win = window(min(x0, x1) - r, max(x0, x1) + r, min(y0, y1) - r, max(y0, y1) + r)
        if win is None:
            continue
        seg = np.array([x1 - x0, y1 - y0, z1 - z0])
        L2 = float(seg @ seg) or 1e-12
        px, py, pz = X[win] - x0, Y[win] - y0, z - z0
        t = np.clip((px * seg[0] + py * seg[1] + pz * seg[2]) / L2, 0.0, 1.0)
        d = r - np.sqrt((px - t * seg[0]) ** 2 + (py - t * seg[1]) ** 2 + (pz - t * seg[2]) ** 2)
        dv, ov = depth[win], owner[win]  # views: update in place
        ov[(d > dv) & (d > 0)] = own
        np.maximum(dv, d, out=dv)
    return depth, owner


class Specimen:
    """A seeded 3-D phantom of one preset.

    Args:
        params: The preset's ``phantom`` mapping.
        tissue: Tissue properties for staining.
        seed: Integer seed or Generator; the same seed gives the same specimen.
        name: Preset name.
    """

    def __init__(self, params: dict[str, Any], *, tissue: TissueProperties, seed: int | np.random.Generator = 0, name: str = "custom") -> None:
        self.name = name
        self.params = dict(params)
        self.tissue = tissue
        rng = as_generator(seed if isinstance(seed, np.random.Generator) else None, seed=None if isinstance(seed, np.random.Generator) else int(seed))
        self.extent_nm = np.asarray(self.params.get("extent_um", [60, 60, 6]), float) * 1e3
        if self.extent_nm.shape != (3,) or np.any(self.extent_nm <= 0):
            raise ParameterError(f"phantom.extent_um={self.params.get('extent_um')!r} must be three positive numbers")
        self.membrane_nm = check_range("membrane_nm", float(self.params.get("membrane_nm", 8.0)), 1.0, 100.0)
        # stain-binding density of what surrounds the cells (e.g. the embedding gelatin), 0-0.25
        self.matrix_density = check_range("matrix_density", float(self.params.get("matrix_density", 0.0)), 0.0, 0.25)
        self.cells, self.nuclei, self.mitochondria, self.targets = _Shapes(), _Shapes(), _Shapes(), _Shapes()
        self._build(rng)

    @classmethod
    def from_preset(cls, name: str, *, seed: int = 0) -> Specimen:
        """Build the phantom of preset ``name`` (``neurons``, ``tissue_block``, ``bead_calibration``)."""
        data = load_preset(name)
        return cls(data.get("phantom", {}), tissue=TissueProperties.from_dict(data.get("tissue", {})), seed=seed, name=str(data.get("name", name)))

    # -- construction -------------------------------------------------------------
    def _build(self, rng: np.random.Generator) -> None:
        p, ext = self.params, self.extent_nm
        n_cells = check_int("phantom.cells", int(p.get("cells", 8)), 0, 10_000)
        lo, hi = (x * 1e3 for x in p.get("soma_radius_um", [5, 8]))
        flat = float(p.get("soma_flatness", 0.35))
        ells, e_own, caps, c_own = [], [], [], []
        nucs, mito, mito_own, targ, targ_own = [], [], [], [], []
        nscale = float(p.get("nucleus_scale", 0.6))
        for k in range(1, n_cells + 1):
            a, b = rng.uniform(lo, hi), rng.uniform(lo, hi)
            c = max(a, b) * flat
            cx, cy = rng.uniform(0, ext[0]), rng.uniform(0, ext[1])
            cz = c if flat < 0.6 else rng.uniform(0, ext[2])
            ang = rng.uniform(0, math.pi)
            ells.append((cx, cy, cz, a, b, c, ang))
            e_own.append(k)
            nucs.append((cx + rng.normal(0, 0.1 * a), cy + rng.normal(0, 0.1 * b), cz, a * nscale, b * nscale, c * nscale, ang))
            axes: list[tuple[np.ndarray, np.ndarray, float]] = []
            for _ in range(int(p.get("neurites_per_cell", 0))):
                phi = rng.uniform(0, 2 * math.pi)
                length = rng.uniform(*p.get("neurite_length_um", [15, 40])) * 1e3
                r = rng.uniform(*p.get("neurite_radius_um", [0.3, 0.7])) * 1e3
                start = np.array([cx, cy, cz * 0.6])
                mid = start + np.array([math.cos(phi), math.sin(phi), 0.0]) * length * 0.5
                phi2 = phi + rng.normal(0, 0.4)
                end = mid + np.array([math.cos(phi2), math.sin(phi2), 0.0]) * length * 0.5
                heights = p.get("neurite_height_um")
                # neurites run at a height drawn from ``neurite_height_um`` (a network crossing
                # over somata and each other), else low on the coverslip
                h = rng.uniform(*heights) * 1e3 if heights else cz * 0.3
                end[2] = mid[2] = max(r, h)
                for s0, s1 in ((start, mid), (mid, end)):
                    caps.append((*s0, *s1, r))
                    c_own.append(k)
                    axes.append((s0, s1, r))
            for _ in range(int(p.get("mitochondria_per_cell", 0))):
                rm = float(p.get("mitochondrion_radius_um", 0.2)) * 1e3
                lm = rng.uniform(*p.get("mitochondrion_length_um", [0.5, 2.0])) * 1e3
                if axes and rng.random() < 0.5:
                    s0, s1, r = axes[rng.integers(len(axes))]
                    t = rng.uniform(0.1, 0.9)
                    centre = s0 + t * (s1 - s0)
                    direction = (s1 - s0) / (np.linalg.norm(s1 - s0) + 1e-9)
                    rm = min(rm, 0.6 * r)
                else:  # in the soma cytoplasm, between nucleus and membrane
                    th, rr = rng.uniform(0, 2 * math.pi), rng.uniform(nscale + 0.1, 0.85)
                    centre = np.array([cx + rr * a * math.cos(th), cy + rr * b * math.sin(th), cz + rng.uniform(-0.4, 0.4) * c])
                    direction = np.array([-math.sin(th), math.cos(th), 0.0])
                half = 0.5 * max(lm - 2 * rm, 0.0) * direction
                mito.append((*(centre - half), *(centre + half), rm))
                mito_own.append(k)
            for _ in range(int(p.get("targets_per_cell", 0))):
                rt = float(p.get("target_radius_um", 0.15)) * 1e3
                if axes:
                    s0, s1, r = axes[rng.integers(len(axes))]
                    centre = s0 + rng.uniform(0.05, 1.0) * (s1 - s0)
                    off = rng.normal(size=3)
                    off[2] *= 0.3
                    centre = centre + off / (np.linalg.norm(off) + 1e-9) * r
                else:
                    centre = np.array([cx + rng.uniform(-a, a), cy + rng.uniform(-b, b), cz])
                targ.append((*centre, *centre, rt))
                targ_own.append(k)
        for _ in range(int(p.get("free_targets", 0))):
            rt = float(p.get("target_radius_um", 0.1)) * 1e3
            centre = rng.uniform([0, 0, rt], [ext[0], ext[1], max(ext[2] - rt, rt)])
            targ.append((*centre, *centre, rt))
            targ_own.append(0)
        self.cells = _Shapes(np.array(ells).reshape(-1, 7), np.array(caps).reshape(-1, 7), np.array(e_own, int), np.array(c_own, int))
        self.nuclei = _Shapes(np.array(nucs).reshape(-1, 7), np.zeros((0, 7)), np.arange(1, len(nucs) + 1), np.zeros(0, int))
        # envelope, pores and chromatin from a seed derived from the nuclei themselves: no
        # further draws from ``rng``, so every other shape (and a caller's generator) is as before
        self.envelope = NuclearEnvelope(self.nuclei.ellipsoids)
        self.mitochondria = _Shapes(np.zeros((0, 7)), np.array(mito).reshape(-1, 7), np.zeros(0, int), np.array(mito_own, int))
        self.targets = _Shapes(np.zeros((0, 7)), np.array(targ).reshape(-1, 7), np.zeros(0, int), np.array(targ_own, int))
        self.target_site = str(p.get("target_site", "neurites"))

    # -- sections -------------------------------------------------------------------
    def section(
        self,
        index: int,
        *,
        thickness_nm: float,
        shape: tuple[int, int] = (512, 512),
        pixel_size_nm: float = 100.0,
        origin_nm: tuple[float, float] = (0.0, 0.0),
        rotation_deg: float = 0.0,
        n_planes: int = 3,
    ) -> SectionTruth:
        """Ground truth of section ``index`` of a series cut at a constant ``thickness_nm``.

        Section k spans ``[k t, (k+1) t)`` in z; a series whose thickness changes is cut
        with :meth:`section_at` at the running depth instead.

        Args:
            index: Section number.
            thickness_nm: Section thickness, 10-5000 nm.
            shape: Pixel grid ``(H, W)``.
            pixel_size_nm: Pixel size, 0.1-10000 nm.
            origin_nm: Specimen coordinates of pixel (0, 0).
            rotation_deg: Rotation of the pixel grid in the specimen plane.
            n_planes: Planes sampled through the thickness for projected densities.
        """
        check_int("index", index, 0, 10_000_000)
        check_range("thickness_nm", thickness_nm, 10.0, 5000.0)
        return self.section_at(index * float(thickness_nm), thickness_nm=thickness_nm, shape=shape, pixel_size_nm=pixel_size_nm,
                               origin_nm=origin_nm, rotation_deg=rotation_deg, n_planes=n_planes, index=index)

    def section_at(
        self,
        z_top_nm: float,
        *,
        thickness_nm: float,
        shape: tuple[int, int] = (512, 512),
        pixel_size_nm: float = 100.0,
        origin_nm: tuple[float, float] = (0.0, 0.0),
        rotation_deg: float = 0.0,
        n_planes: int = 3,
        stretch: float = 1.0,
        index: int = 0,
        organelles: bool = True,
    ) -> SectionTruth:
        """Ground truth of the slab ``[z_top_nm, z_top_nm + thickness_nm)`` on a pixel grid.

        Args:
            z_top_nm: Depth of the slab's top, nm (the running sum of the feeds cut so far).
            thickness_nm: Slab thickness, 10-5000 nm.
            shape, pixel_size_nm, origin_nm, rotation_deg, n_planes: as :meth:`section`.
            stretch: Specimen length per pixel row relative to ``pixel_size_nm`` along the
                grid's rows (axis 0), 0.2-5: a section compressed by ``c`` along the cut
                (axis 0) is imaged with ``stretch = 1 / (1 - c)`` (more specimen per row).
            index: Section number recorded in the result.
            organelles: Render nuclei and mitochondria (False leaves their masks empty, for
                fields that need only cells and labelled targets, e.g. LM of punctate labels;
                twice as fast on large fields).
        """
        check_range("z_top_nm", z_top_nm, -1e9, 1e9)
        check_range("thickness_nm", thickness_nm, 10.0, 5000.0)
        check_range("pixel_size_nm", pixel_size_nm, 0.1, 10_000.0)
        check_range("stretch", stretch, 0.2, 5.0)
        check_int("n_planes", n_planes, 1, 64)
        H, W = (check_int("shape[0]", shape[0], 1, 16384), check_int("shape[1]", shape[1], 1, 16384))
        aff = pixel_affine(origin_nm, pixel_size_nm, rotation_deg)
        if stretch != 1.0:  # rows scaled about the grid's middle row, which stays where it was
            rc = (H - 1) / 2.0
            aff = aff @ np.array([[1.0, 0.0, 0.0], [0.0, float(stretch), rc * (1.0 - float(stretch))], [0.0, 0.0, 1.0]])
        inv = np.linalg.inv(aff)
        cols, rows = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
        X = (aff[0, 0] * cols + aff[0, 1] * rows + aff[0, 2]).astype(np.float32)
        Y = (aff[1, 0] * cols + aff[1, 1] * rows + aff[1, 2]).astype(np.float32)
        z_mid = float(z_top_nm) + 0.5 * thickness_nm
        zs = [z_mid] if n_planes == 1 else list(z_mid + thickness_nm * (np.arange(n_planes) + 0.5 - n_planes / 2) / n_planes)
        mem_w = max(self.membrane_nm, pixel_size_nm)
        pix_nm = pixel_size_nm * math.sqrt(float(stretch))  # side of a square of the pixel's area
        density = np.zeros((H, W), np.float32)
        tdens = np.zeros((H, W), np.float32)
        # each nucleus the slab cuts: its pixel window (the largest cross-section's) and the
        # chromatin texture there, averaged over the pixel and the slab once for all planes
        nuclei = []
        if organelles:
            for k, (cz, c) in enumerate(self.nuclei.ellipsoids[:, [2, 5]]):
                box = self.envelope.box(k, min(max(cz, zs[0]), zs[-1]), inv, H, W, 2.0 * pix_nm)
                if box is not None:
                    nuclei.append((k, box, self.envelope.texture(k, X[box], Y[box], pix_nm, z_mid, float(thickness_nm))))
        mid = None
        for z in zs:
            dc, own = _depth_map(self.cells, X, Y, z, inv)
            need_mito = organelles or self.target_site == "mitochondria"
            dn = _depth_map(self.nuclei, X, Y, z, inv)[0] if organelles else np.zeros_like(dc)
            dm = _depth_map(self.mitochondria, X, Y, z, inv)[0] if need_mito else np.zeros_like(dc)
            dt, _ = _depth_map(self.targets, X, Y, z, inv)
            cell = dc > 0
            nuc = (dn > 0) & cell
            mit = (dm > 0) & cell & ~nuc
            mem = (cell & (dc < mem_w)) | (mit & (dm < mem_w))
            tgt = self._targets(dt > 0, mit, cell)
            plane = _DENSITY[cell.view(np.uint8) | (mit.view(np.uint8) << 2) | (mem.view(np.uint8) << 3)]
            for k, box, tex in nuclei:  # the nuclear envelope and chromatin (sim.nucleus)
                dens_k, reach, env_mem = self.envelope.render(k, X[box], Y[box], z, pix_nm, plane[box], tex)
                reach &= cell[box]
                plane[box] = np.where(reach, dens_k, plane[box])
                mem[box] |= env_mem & cell[box]
            density += plane
            if self.matrix_density:
                density += np.where(cell, np.float32(0.0), np.float32(self.matrix_density))
            tdens += tgt
            if mid is None or abs(z - z_mid) < 1e-9 or (n_planes % 2 == 0 and z == zs[n_planes // 2]):
                mid = (np.where(cell, own, 0).astype(np.int32), nuc, mit, mem, tgt)
        assert mid is not None
        n = float(len(zs))
        return SectionTruth(
            index=int(index),
            z_nm=z_mid,
            thickness_nm=float(thickness_nm),
            pixel_size_nm=float(pixel_size_nm),
            affine=aff,
            cells=mid[0],
            nuclei=mid[1],
            mitochondria=mid[2],
            membranes=mid[3],
            targets=mid[4],
            density=np.minimum(density / n, 1.0),
            target_density=tdens / n,
        )

    def labelled_sites(self) -> np.ndarray:
        """Centres and z half-extents of the labelled structures, ``(N, 4)``: ``x, y, z, half_height`` nm.

        The preset's ``target_site``: labelled puncta (``neurites``/``free``), mitochondria, or cells.
        """
        if self.target_site == "mitochondria":
            c = self.mitochondria.capsules
            centre = 0.5 * (c[:, :3] + c[:, 3:6])
            half = 0.5 * np.abs(c[:, 5] - c[:, 2]) + c[:, 6]
        elif self.target_site == "cells":
            e = self.cells.ellipsoids
            centre, half = e[:, :3], e[:, 5]
        else:
            c = self.targets.capsules
            centre, half = c[:, :3], c[:, 6]
        return np.column_stack([centre, half]) if len(centre) else np.zeros((0, 4))

    def inside_soma(self, points: np.ndarray, *, margin_nm: float = 0.0) -> np.ndarray:
        """Whether each specimen point ``(N, 3)`` nm lies inside a soma (a cell's ellipsoid) grown by ``margin_nm``."""
        pts = np.asarray(points, float).reshape(-1, 3)
        inside = np.zeros(len(pts), bool)
        for cx, cy, cz, a, b, c, ang in self.cells.ellipsoids:
            dx, dy, dz = pts[:, 0] - cx, pts[:, 1] - cy, pts[:, 2] - cz
            ca, sa = math.cos(ang), math.sin(ang)
            u, v = (ca * dx + sa * dy) / (a + margin_nm), (-sa * dx + ca * dy) / (b + margin_nm)
            inside |= u * u + v * v + (dz / (c + margin_nm)) ** 2 < 1.0
        return inside

    def inside_cells(self, points: np.ndarray) -> np.ndarray:
        """Whether each specimen point ``(N, 3)`` nm lies inside a cell (soma or neurite)."""
        pts = np.asarray(points, float).reshape(-1, 3)
        inside = self.inside_soma(pts)
        for x0, y0, z0, x1, y1, z1, r in self.cells.capsules:
            seg = np.array([x1 - x0, y1 - y0, z1 - z0])
            rel = pts - np.array([x0, y0, z0])
            t = np.clip(rel @ seg / max(float(seg @ seg), 1e-12), 0.0, 1.0)
            inside |= np.sum((rel - t[:, None] * seg) ** 2, axis=1) < r * r
        return inside

    def _targets(self, puncta: np.ndarray, mito: np.ndarray, cell: np.ndarray) -> np.ndarray:
        if self.target_site == "mitochondria":
            return mito
        if self.target_site == "cells":
            return cell
        return puncta
