"""The nucleus as thin-section EM shows it: a double envelope with pores, peripheral
heterochromatin and granular euchromatin, analytic in specimen coordinates.

A nucleus of :mod:`cryoopt.sim.specimen` is an ellipsoid; this module gives each point
near or inside it a stain-binding density (the scale of ``specimen._DENSITY``) from its
depth below the nuclear surface:

    outer membrane | perinuclear space | inner membrane | heterochromatin | euchromatin

with nuclear pores (the two membranes joined around a channel, the chromatin band broken
beneath them) at points drawn on the surface. Everything is a function of specimen
``(x, y, z)``, so adjacent sections, LM and EM grids of one section agree; sizes below a
pixel are averaged over the pixel (box along the depth, across the pore, over the pixel
and the slab thickness for the texture), so a 30 nm perinuclear space becomes a grey level
at LM pixel sizes instead of aliasing. Pores, texture and band thickness come from a seed
derived from the nuclei's own shape parameters (no global or shared random state).
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = ["NuclearEnvelope", "EnvelopeGeometry", "GEOMETRY"]

# -- published sizes -------------------------------------------------------------------------


@dataclass(frozen=True)
class EnvelopeGeometry:
    """Sizes of the nuclear envelope and chromatin, nm (and pores per um^2)."""

    #: Each of the two envelope membranes: a lipid bilayer, 7-8 nm in thin-section EM
    #: (Alberts et al., Molecular Biology of the Cell, 6th ed., ch. 12; Fawcett, The Cell, 2nd ed., 1981).
    membrane_nm: float = 7.5
    #: Perinuclear space between outer and inner membrane, 20-40 nm (Alberts ch. 12; Fawcett 1981).
    perinuclear_nm: float = 30.0
    #: Nuclear pore diameter where the two membranes join, ~100-120 nm (Alberts ch. 12;
    #: the pore complex is ~120 nm across, its membrane-lined pore ~100 nm).
    pore_diameter_nm: float = 110.0
    #: Pores per um^2 of envelope: 10-50 (Maul 1977, Int. Rev. Cytol. Suppl. 6); ~11-12 in
    #: mammalian somatic cells, 50-60 only in amphibian oocytes.
    pores_per_um2: float = 12.0
    #: Peripheral heterochromatin along the inner membrane, 50-300 nm thick (Fawcett 1981):
    #: each nucleus draws a mean thickness in ``heterochromatin_mean_nm`` and varies it along
    #: the surface by +-50 %, clipped to ``heterochromatin_nm``.
    heterochromatin_nm: tuple[float, float] = (50.0, 300.0)
    heterochromatin_mean_nm: tuple[float, float] = (80.0, 200.0)
    #: Heterochromatin-free channels under each pore (Fawcett 1981; Schermelleh et al. 2008,
    #: Science 320:1332), radius relative to the pore's.
    exclusion_scale: float = 1.5
    #: Granular euchromatin: chromatin fibres and interchromatin granules of 20-30 nm
    #: clustered into domains of 100-300 nm (Fawcett 1981; Ou et al. 2017, Science 357:eaag0025):
    #: a band-passed random field, granules of ``texture_grain_nm`` (Gaussian sigma) and domains
    #: of ``texture_domain_nm``, on a periodic lattice of ``texture_cell_nm`` cells.
    texture_grain_nm: float = 12.0
    texture_domain_nm: float = 60.0
    texture_cell_nm: float = 10.0
    texture_cells: tuple[int, int, int] = (256, 256, 32)


GEOMETRY = EnvelopeGeometry()

#: Stain-binding densities on the scale of ``specimen._DENSITY`` (cytoplasm 0.25, the
#: plasma membrane 0.25 + 0.5): envelope membranes as the plasma membrane; the perinuclear
#: space as the cytoplasm (electron-lucent between the dark membranes); the pore complex's
#: channel as the nucleoplasm; heterochromatin denser than euchromatin (the condensed
#: chromatin binds uranyl and lead strongly: Fawcett 1981); euchromatin at the mean of the
#: former flat nucleus (0.40) with a granular modulation.
MEMBRANE_DENSITY = 0.75
LUMEN_DENSITY = 0.25
PORE_DENSITY = 0.40
HETEROCHROMATIN_DENSITY = 0.62
EUCHROMATIN_DENSITY = 0.40
#: Amplitude of the euchromatin texture per unit of the unit-variance field (before
#: averaging over the pixel and slab); the heterochromatin's texture is half of it.
TEXTURE_AMPLITUDE = 0.10


#: Seed of the one chromatin lattice all specimens share.
_LATTICE_SEED = 20_250_101


@functools.lru_cache(maxsize=2)
def _texture_cumsum(cells: tuple[int, int, int], grain: float, domain: float) -> np.ndarray:
    """Running sum along z of the chromatin lattice (unit variance, periodic), ``(nz + 1, nx, ny)``.

    One lattice from a fixed seed is shared by all specimens; a specimen's nuclei read it at
    offsets drawn from the specimen's own seed. Building it costs ~1 s of filtering, so it is
    kept on disk (``$CRYOOPT_CACHE_DIR`` or ``~/.cache/cryoopt``, 17 MB, keyed by the lattice's
    settings and the NumPy/SciPy versions that drew and filtered it) and read back bit for bit
    by later processes (a benchmark's or a test run's workers, a resumed campaign). An
    unreadable or unwritable cache only means building it again.
    """
    path = _lattice_cache_path(cells, grain, domain)
    shape = (cells[2] + 1, cells[0], cells[1])
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == shape and cached.dtype == np.float64:
            return cached
    except (OSError, ValueError, EOFError):
        pass
    out = _build_texture_cumsum(cells, grain, domain)
    tmp = None
    try:  # written whole under a temporary name, then renamed: a reader never sees half a file
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as f:
            tmp = f.name
            np.save(f, out, allow_pickle=False)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
    return out


def _lattice_cache_path(cells: tuple[int, int, int], grain: float, domain: float) -> Path:
    key = repr((cells, float(grain), float(domain), _LATTICE_SEED, np.__version__, scipy.__version__))
    root = Path(os.environ.get("CRYOOPT_CACHE_DIR") or Path.home() / ".cache" / "cryoopt")
    return root / "chromatin" / f"lattice-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"


def _build_texture_cumsum(cells: tuple[int, int, int], grain: float, domain: float) -> np.ndarray:
    """:func:`_texture_cumsum` computed from the seed."""
    noise = np.random.default_rng(_LATTICE_SEED).standard_normal(cells).astype(np.float32)
    fine = ndimage.gaussian_filter(noise, grain, mode="wrap")
    coarse = ndimage.gaussian_filter(noise, domain, mode="wrap")
    field = fine / fine.std() + coarse / coarse.std()  # granules and the domains they cluster in
    field = field / field.std()
    out = np.zeros((cells[2] + 1, cells[0], cells[1]))  # z first: each plane contiguous
    np.cumsum(np.moveaxis(field, 2, 0), axis=0, out=out[1:])
    return out


def _ellipsoid_area(a: float, b: float, c: float) -> float:
    """Surface area of an ellipsoid (Knud Thomsen's approximation, error < 1.1 %)."""
    p = 1.6075
    return 4.0 * math.pi * (((a * b) ** p + (a * c) ** p + (b * c) ** p) / 3.0) ** (1.0 / p)


def _overlap(lo: np.ndarray, hi: np.ndarray, a: np.ndarray | float, b: np.ndarray | float) -> np.ndarray:
    """Length of ``[lo, hi] & [a, b]`` (elementwise, 0 when disjoint)."""
    return np.clip(np.minimum(hi, b) - np.maximum(lo, a), 0.0, None)


class NuclearEnvelope:
    """Pores, chromatin texture and heterochromatin of a specimen's nuclei.

    Args:
        ellipsoids: Nuclei ``(N, 7)``: ``cx, cy, cz, a, b, c, angle`` (nm, rad), as ``_Shapes``.
        geometry: Sizes (defaults: :data:`GEOMETRY`, published values).
    """

    def __init__(self, ellipsoids: np.ndarray, geometry: EnvelopeGeometry = GEOMETRY) -> None:
        self.ellipsoids = np.asarray(ellipsoids, float).reshape(-1, 7)
        self.geometry = g = geometry
        digest = hashlib.sha256(np.ascontiguousarray(self.ellipsoids).tobytes()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:16], "little"))
        pores, owner = [], []
        for k, (cx, cy, cz, a, b, c, ang) in enumerate(self.ellipsoids):
            n = int(rng.poisson(g.pores_per_um2 * _ellipsoid_area(a, b, c) * 1e-6))
            pts = self._surface_points(rng, n, a, b, c)
            ca, sa = math.cos(ang), math.sin(ang)
            pores.append(np.column_stack([cx + ca * pts[:, 0] - sa * pts[:, 1], cy + sa * pts[:, 0] + ca * pts[:, 1], cz + pts[:, 2]]))
            owner.append(np.full(n, k))
        self.pores = np.concatenate(pores) if pores else np.zeros((0, 3))
        self.pore_owner = np.concatenate(owner) if owner else np.zeros(0, int)
        lo, hi = g.heterochromatin_mean_nm
        self.heterochromatin_nm = rng.uniform(lo, hi, len(self.ellipsoids))
        # each nucleus reads the shared chromatin lattice at its own offset (nm)
        self.texture_offset = rng.uniform(0, 1, (len(self.ellipsoids), 3)) * np.array(g.texture_cells) * g.texture_cell_nm
        # the band's thickness varies along the surface on a micrometre scale
        kb = rng.normal(size=(3, 3))
        self.band_k = kb / np.linalg.norm(kb, axis=1, keepdims=True) * (2 * math.pi / rng.uniform(800.0, 2000.0, 3))[:, None]
        self.band_phase = rng.uniform(0, 2 * math.pi, 3)
        self._tree: cKDTree | None = None

    @staticmethod
    def _surface_points(rng: np.random.Generator, n: int, a: float, b: float, c: float) -> np.ndarray:
        """``n`` points uniform by area on the ellipsoid ``(x/a)^2 + (y/b)^2 + (z/c)^2 = 1`` (rejection on the area element)."""
        out = np.zeros((0, 3))
        gmax = max(b * c, a * c, a * b)
        while len(out) < n:
            u = rng.normal(size=(2 * (n - len(out)) + 8, 3))
            u /= np.linalg.norm(u, axis=1, keepdims=True)
            area = np.sqrt((b * c * u[:, 0]) ** 2 + (a * c * u[:, 1]) ** 2 + (a * b * u[:, 2]) ** 2)
            keep = rng.random(len(u)) * gmax < area
            out = np.concatenate([out, u[keep] * np.array([a, b, c])])
        return out[:n]

    @property
    def tree(self) -> cKDTree:
        if self._tree is None:
            self._tree = cKDTree(self.pores if len(self.pores) else np.full((1, 3), 1e18))
        return self._tree

    # -- rendering --------------------------------------------------------------------------
    def texture(self, k: int, X: np.ndarray, Y: np.ndarray, pixel_nm: float, z_mid: float, thickness_nm: float) -> np.ndarray:
        """Nucleus ``k``'s granular field at pixels ``X, Y`` (nm), averaged over each pixel and the slab.

        The lattice is averaged over the slab's thickness (exactly, from its running sum
        along z) and box-filtered over the pixel's side, then interpolated: a field finer
        than the pixel or the section averages out rather than aliasing.
        """
        g = self.geometry
        cell = g.texture_cell_nm
        cums = _texture_cumsum(g.texture_cells, g.texture_grain_nm / cell, g.texture_domain_nm / cell)
        nx, ny, nz = g.texture_cells
        ox, oy, oz = self.texture_offset[k]
        zc, tc = (z_mid + oz) / cell, max(thickness_nm / cell, 1e-3)

        def integral(s: float) -> np.ndarray:  # integral of the periodic lattice along z from 0 to s (cells)
            turns, rem = divmod(s, nz)
            i0 = int(math.floor(rem))
            part = cums[i0] + (rem - i0) * (cums[min(i0 + 1, nz)] - cums[i0])
            return turns * cums[nz] + part

        plane = ((integral(zc + 0.5 * tc) - integral(zc - 0.5 * tc)) / tc).astype(np.float32)
        side = int(round(pixel_nm / cell))
        if side > 1:
            plane = ndimage.uniform_filter(plane, min(side, nx), mode="wrap")
        u, v = (X + np.float32(ox)) / np.float32(cell), (Y + np.float32(oy)) / np.float32(cell)  # bilinear, periodic
        u0, v0 = np.floor(u), np.floor(v)
        fu, fv = u - u0, v - v0
        i0, j0 = u0.astype(np.int64) % nx, v0.astype(np.int64) % ny
        i1, j1 = (i0 + 1) % nx, (j0 + 1) % ny
        top = plane[i0, j0] * (1 - fv) + plane[i0, j1] * fv
        bottom = plane[i1, j0] * (1 - fv) + plane[i1, j1] * fv
        return (top * (1 - fu) + bottom * fu).astype(np.float32)

    def box(self, k: int, z: float, inv: np.ndarray, H: int, W: int, pad_nm: float) -> tuple[slice, slice] | None:
        """Pixel window of nucleus ``k``'s cross-section at plane ``z`` grown by ``pad_nm``, or None."""
        cx, cy, cz, a, b, c, _ = self.ellipsoids[k]
        dz = (z - cz) / c
        if abs(dz) >= 1.0:
            return None
        r = max(a, b) * math.sqrt(1.0 - dz * dz) + pad_nm
        corners = inv @ np.array([[cx - r, cy - r, 1], [cx - r, cy + r, 1], [cx + r, cy - r, 1], [cx + r, cy + r, 1]]).T
        c0, c1 = max(int(math.floor(corners[0].min())) - 1, 0), min(int(math.ceil(corners[0].max())) + 2, W)
        r0, r1 = max(int(math.floor(corners[1].min())) - 1, 0), min(int(math.ceil(corners[1].max())) + 2, H)
        if c0 >= c1 or r0 >= r1:
            return None
        return slice(r0, r1), slice(c0, c1)

    def render(
        self,
        k: int,
        X: np.ndarray,
        Y: np.ndarray,
        z: float,
        pixel_nm: float,
        outside: np.ndarray,
        texture: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Density of nucleus ``k`` at plane ``z`` on the pixels ``X, Y`` (one window).

        Args:
            outside: Density the pixels have outside the nucleus (cytoplasm, a membrane).
            texture: :meth:`texture` on the same pixels.

        Returns:
            ``(density, reach, membrane)``: the pixel-averaged density, where it applies
            (pixels whose box reaches into the nucleus), and where a pixel is envelope
            membrane (a bilayer's centre within half a pixel; not over a pore's channel).
        """
        g = self.geometry
        cx, cy, cz, a, b, c, ang = self.ellipsoids[k]
        ca, sa = math.cos(ang), math.sin(ang)
        zz = float(z - cz)
        xs, ys = X - np.float32(cx), Y - np.float32(cy)
        xr, yr = ca * xs + sa * ys, -sa * xs + ca * ys
        m, gap = g.membrane_nm, g.perinuclear_nm
        E = 2 * m + gap
        gx, gy = xr * np.float32(2 / a**2), yr * np.float32(2 / b**2)
        gz = 2 * zz / c**2
        gxy2 = gx * gx + gy * gy
        grad = np.maximum(np.sqrt(gxy2 + np.float32(gz * gz)), np.float32(1e-12))
        rho = np.sqrt((xr / np.float32(a)) ** 2 + (yr / np.float32(b)) ** 2 + np.float32((zz / c) ** 2))
        depth = 2 * rho * (1 - rho) / grad  # first-order distance below the surface, exact on a sphere
        w = np.maximum(pixel_nm * np.sqrt(gxy2) / grad, np.float32(0.5))  # the pixel's extent along the depth
        reach = depth > -0.5 * w
        dens = (EUCHROMATIN_DENSITY + TEXTURE_AMPLITUDE * texture).astype(np.float32)
        membrane = np.zeros(X.shape, bool)
        # the shell near the surface gets the envelope's profile; deeper is euchromatin only
        shell = reach & (depth < E + g.heterochromatin_nm[1] + w)
        if not np.any(shell):
            return dens, reach, membrane
        xr, yr, tex, out = xr[shell], yr[shell], texture[shell], outside[shell]
        gx, gy, grad, depth, w = gx[shell], gy[shell], grad[shell], depth[shell], w[shell]
        # heterochromatin thickness along the surface (smooth, micrometre scale)
        Xs, Ys = X[shell], Y[shell]
        band = np.zeros_like(depth)
        for kb, ph in zip(self.band_k, self.band_phase):
            band += np.cos(kb[0] * Xs + kb[1] * Ys + np.float32(kb[2] * z + ph))
        h = np.clip(self.heterochromatin_nm[k] * (1 + 0.5 * band / 3.0), *g.heterochromatin_nm)
        # distance along the surface to the nearest pore, for pixels within the pore's reach
        R = 0.5 * g.pore_diameter_nm
        Rx = g.exclusion_scale * R
        wt = pixel_nm
        r_pore = np.full(depth.shape, np.inf, np.float32)
        near = (depth > -0.5 * w) & (depth < E + h + 0.5 * w)
        if np.any(near) and len(self.pores):
            d = depth[near]
            sx, sy = xr[near] + d * gx[near] / grad[near], yr[near] + d * gy[near] / grad[near]  # nearest surface point
            sz = zz + d * gz / grad[near]
            pts = np.column_stack([cx + ca * sx - sa * sy, cy + sa * sx + ca * sy, cz + sz])
            r_pore[near], _ = self.tree.query(pts, distance_upper_bound=Rx + wt)
        lo, hi = depth - 0.5 * w, depth + 0.5 * w
        f_out = _overlap(lo, hi, -np.inf, 0.0) / w
        f_m = (_overlap(lo, hi, 0.0, m) + _overlap(lo, hi, m + gap, E)) / w
        f_l = _overlap(lo, hi, m, m + gap) / w
        f_h = _overlap(lo, hi, E, E + h) / w
        f_e = np.clip(1.0 - f_out - f_m - f_l - f_h, 0.0, 1.0)
        rlo, rhi = r_pore - 0.5 * wt, r_pore + 0.5 * wt
        q_ch = _overlap(rlo, rhi, 0.0, R - m) / wt  # open channel (0 where no pore is near: r_pore = inf)
        q_rim = _overlap(rlo, rhi, R - m, R) / wt  # membrane bent round the pore
        q_x = _overlap(rlo, rhi, 0.0, Rx) / wt  # no heterochromatin beneath a pore
        eu = EUCHROMATIN_DENSITY + TEXTURE_AMPLITUDE * tex
        het = HETEROCHROMATIN_DENSITY + 0.5 * TEXTURE_AMPLITUDE * tex
        rho_m = MEMBRANE_DENSITY - q_ch * (MEMBRANE_DENSITY - PORE_DENSITY)
        rho_l = LUMEN_DENSITY + q_ch * (PORE_DENSITY - LUMEN_DENSITY) + q_rim * (MEMBRANE_DENSITY - LUMEN_DENSITY)
        rho_h = het + q_x * (eu - het)
        dens[shell] = f_out * out + f_m * rho_m + f_l * rho_l + f_h * rho_h + f_e * eu
        # membrane truth as for the plasma membrane: each bilayer widened to a pixel about its
        # centre (two lines where pixels resolve the perinuclear space, one where they do not)
        half = 0.5 * np.maximum(w, m)
        membrane[shell] = ((np.abs(depth - 0.5 * m) < half) | (np.abs(depth - (E - 0.5 * m)) < half)) & (q_ch < 0.5)
        return dens, reach, membrane
