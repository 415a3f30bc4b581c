"""Paired-image store: one field imaged on two microscopes, registered, on disk.

Images are OME-TIFF files (:mod:`tifffile`, physical pixel sizes in the OME
metadata) and an SQLite index (``pairs.sqlite``) holds one row per pair: the two
modalities, pixel sizes, shapes, the registration (3x3 matrix, rotation, scale,
shift, axial offset for stacks) and its quality (FRE/TRE, matched structures).
Registration is :func:`cryoopt.pipeline.registration.register_lm_em` with the
known pixel sizes (``moving`` -> ``reference``), or a phase-correlation translation
at the pixel-size ratio when that correlates the overlap better (same-contrast
LM-LM pairs of sparse puncta); stacks are registered laterally on
their maximum projections and axially by the plane offset that maximises the
correlation of the registered planes. The moving image resampled onto the
reference grid is stored too, ready for training.

Example:
    >>> store = PairStore(tmp_dir)                               # doctest: +SKIP
    >>> pid = store.add(wf, cf, modality_moving="widefield", modality_reference="confocal",
    ...                 pixel_size_moving_nm=100, pixel_size_reference_nm=100)  # doctest: +SKIP
    >>> store.get(pid).moving_registered.shape == cf.shape        # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cryoopt.exceptions import EvaluationError, StateError
from cryoopt.restore._image import as_image

__all__ = ["Pair", "PairStore", "read_ome_tiff", "write_ome_tiff"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS pairs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    field TEXT NOT NULL,
    modality_moving TEXT NOT NULL,
    modality_reference TEXT NOT NULL,
    path_moving TEXT NOT NULL,
    path_reference TEXT NOT NULL,
    path_registered TEXT,
    pixel_size_moving_nm REAL,
    pixel_size_reference_nm REAL,
    z_step_nm REAL,
    shape_moving TEXT NOT NULL,
    shape_reference TEXT NOT NULL,
    matrix TEXT,
    rotation_deg REAL,
    scale REAL,
    shift_x_px REAL,
    shift_y_px REAL,
    axial_offset_planes INTEGER,
    axial_offset_nm REAL,
    fre_px REAL,
    tre_px REAL,
    n_matches INTEGER,
    model TEXT,
    metadata TEXT,
    created REAL DEFAULT (strftime('%s', 'now'))
);
"""


def write_ome_tiff(path: str | Path, image: np.ndarray, *, pixel_size_nm: float | None = None, z_step_nm: float | None = None) -> Path:
    """Write a 2-D image (``YX``) or stack (``ZYX``) as OME-TIFF with physical sizes in nm."""
    import tifffile

    arr = np.asarray(image)
    meta: dict[str, Any] = {"axes": "YX" if arr.ndim == 2 else "ZYX"}
    if pixel_size_nm is not None:
        meta.update(PhysicalSizeX=float(pixel_size_nm), PhysicalSizeXUnit="nm", PhysicalSizeY=float(pixel_size_nm), PhysicalSizeYUnit="nm")
    if z_step_nm is not None and arr.ndim == 3:
        meta.update(PhysicalSizeZ=float(z_step_nm), PhysicalSizeZUnit="nm")
    path = Path(path)
    tifffile.imwrite(path, arr, ome=True, metadata=meta)
    return path


_UNIT_NM = {"nm": 1.0, "µm": 1e3, "um": 1e3, "\u00b5m": 1e3, "mm": 1e6, "m": 1e9}


def read_ome_tiff(path: str | Path) -> tuple[np.ndarray, dict[str, float | None]]:
    """Read a (OME-)TIFF; returns the array and ``{"pixel_size_nm", "z_step_nm"}`` (None if absent)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        arr = tif.asarray()
        info: dict[str, float | None] = {"pixel_size_nm": None, "z_step_nm": None}
        xml = tif.ome_metadata
    if xml:
        for key, out in (("PhysicalSizeX", "pixel_size_nm"), ("PhysicalSizeZ", "z_step_nm")):
            m = re.search(rf'{key}="([0-9.eE+-]+)"', xml)
            if m:
                u = re.search(rf'{key}Unit="([^"]+)"', xml)
                info[out] = float(m.group(1)) * _UNIT_NM.get(u.group(1) if u else "µm", 1e3)
    return np.squeeze(arr), info


@dataclass
class Pair:
    """One stored pair with its images loaded."""

    id: int
    field: str
    moving: np.ndarray
    reference: np.ndarray
    moving_registered: np.ndarray | None
    record: dict[str, Any]


def _axial_offset(mov: np.ndarray, ref: np.ndarray, max_offset: int) -> int:
    """Plane offset ``k`` maximising the mean correlation of ``mov[z + k]`` with ``ref[z]``."""
    best, best_c = 0, -math.inf
    for k in range(-max_offset, max_offset + 1):
        cs = []
        for z in range(ref.shape[0]):
            if 0 <= z + k < mov.shape[0]:
                a, b = mov[z + k].ravel(), ref[z].ravel()
                if a.std() > 0 and b.std() > 0:
                    cs.append(float(np.corrcoef(a, b)[0, 1]))
        if cs and np.mean(cs) > best_c:
            best, best_c = k, float(np.mean(cs))
    return best


def _translation(mov: np.ndarray, ref: np.ndarray, px_mov: float | None, px_ref: float | None) -> Any:
    """Scale from the pixel sizes + phase-correlation shift: for same-contrast pairs (LM-LM), where
    the LM-EM feature registration can lock onto a wrong rotation of sparse puncta."""
    from skimage.registration import phase_cross_correlation
    from skimage.transform import AffineTransform, warp

    from cryoopt.pipeline.registration import RegistrationResult

    s = (px_mov / px_ref) if px_mov and px_ref else 1.0
    scaled = warp(mov, AffineTransform(scale=s).inverse, output_shape=ref.shape, order=1, preserve_range=True)
    shift, _, _ = phase_cross_correlation(ref, scaled, upsample_factor=20, normalization=None)
    m = np.array([[s, 0, shift[1]], [0, s, shift[0]], [0, 0, 1.0]])
    return RegistrationResult(m, 0.0, s, 0, math.nan, math.nan, "translation")


def _overlap_corr(reg: Any, mov: np.ndarray, ref: np.ndarray) -> float:
    w = reg.warp(mov, ref.shape)
    valid = reg.warp(np.ones(mov.shape, bool), ref.shape, order=0)
    if valid.sum() < 0.25 * valid.size:
        return -1.0
    a, b = w[valid], ref[valid]
    return float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else -1.0


class PairStore:
    """A folder of OME-TIFF pairs with an SQLite index (created if missing)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        self.db = self.root / "pairs.sqlite"
        with self._con() as con:
            con.executescript(_SCHEMA)

    def _con(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db)
        con.row_factory = sqlite3.Row
        return con

    def __len__(self) -> int:
        with self._con() as con:
            return int(con.execute("SELECT COUNT(*) FROM pairs").fetchone()[0])

    def add(
        self,
        moving: np.ndarray,
        reference: np.ndarray,
        *,
        modality_moving: str,
        modality_reference: str,
        pixel_size_moving_nm: float | None = None,
        pixel_size_reference_nm: float | None = None,
        z_step_nm: float | None = None,
        field: str | None = None,
        register: bool = True,
        model: str = "similarity",
        max_axial_offset: int = 3,
        metadata: dict[str, Any] | None = None,
    ) -> int:
        """Register ``moving`` onto ``reference``, write both (and the resampled moving image), index them.

        Images are 2-D or stacks (``D x H x W``, both of the same kind). Returns the pair id.

        Raises:
            EvaluationError: bad images, or an image and a stack mixed.
        """
        mov = as_image(moving, ndim=(2, 3), name="moving", min_size=16)
        ref = as_image(reference, ndim=(2, 3), name="reference", min_size=16)
        if mov.ndim != ref.ndim:
            raise EvaluationError(f"moving is {mov.ndim}-D but reference is {ref.ndim}-D; pair images with images, stacks with stacks")
        rec: dict[str, Any] = {"matrix": None, "rotation_deg": None, "scale": None, "shift_x_px": None, "shift_y_px": None,
                               "axial_offset_planes": None, "axial_offset_nm": None, "fre_px": None, "tre_px": None,
                               "n_matches": None, "model": None}
        registered = None
        if register:
            from cryoopt.pipeline.registration import RegistrationError, register_lm_em

            m2 = mov.max(0) if mov.ndim == 3 else mov
            r2 = ref.max(0) if ref.ndim == 3 else ref
            alt = _translation(m2, r2, pixel_size_moving_nm, pixel_size_reference_nm)
            try:
                reg = register_lm_em(m2, r2, lm_pixel_size_nm=pixel_size_moving_nm, em_pixel_size_nm=pixel_size_reference_nm, model=model)
            except RegistrationError:  # too few structures to verify a transform: the translation alone
                reg = alt
            if _overlap_corr(alt, m2, r2) > _overlap_corr(reg, m2, r2):
                reg = alt
            if mov.ndim == 2:
                registered = reg.warp(mov, ref.shape).astype(np.float32)
            else:
                planes = np.stack([reg.warp(p, ref.shape[1:]) for p in mov]).astype(np.float32)
                k = _axial_offset(planes, ref, max_axial_offset)
                idx = np.clip(np.arange(ref.shape[0]) + k, 0, planes.shape[0] - 1)
                registered = planes[idx]
                rec.update(axial_offset_planes=k, axial_offset_nm=None if z_step_nm is None else k * z_step_nm)
            rec.update(matrix=json.dumps(np.asarray(reg.matrix).tolist()), rotation_deg=reg.rotation_deg, scale=reg.scale,
                       shift_x_px=float(reg.matrix[0, 2]), shift_y_px=float(reg.matrix[1, 2]),
                       fre_px=None if math.isnan(reg.fre_px) else reg.fre_px, tre_px=None if math.isnan(reg.tre_px) else reg.tre_px,
                       n_matches=reg.n_matches, model=reg.model)
        with self._con() as con:
            cur = con.execute(
                "INSERT INTO pairs (field, modality_moving, modality_reference, path_moving, path_reference, shape_moving, shape_reference,"
                " pixel_size_moving_nm, pixel_size_reference_nm, z_step_nm, metadata) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (field or "", modality_moving, modality_reference, "", "", json.dumps(mov.shape), json.dumps(ref.shape),
                 pixel_size_moving_nm, pixel_size_reference_nm, z_step_nm, json.dumps(metadata or {}, default=str)),
            )
            pid = int(cur.lastrowid)
            field = field or f"field{pid:05d}"
            stem = self.root / "images" / f"{pid:05d}_{re.sub(r'[^A-Za-z0-9_.-]', '_', field)}"
            pm = write_ome_tiff(f"{stem}_{modality_moving}.ome.tif", mov, pixel_size_nm=pixel_size_moving_nm, z_step_nm=z_step_nm)
            pr = write_ome_tiff(f"{stem}_{modality_reference}.ome.tif", ref, pixel_size_nm=pixel_size_reference_nm, z_step_nm=z_step_nm)
            preg = None
            if registered is not None:
                preg = write_ome_tiff(f"{stem}_{modality_moving}_on_{modality_reference}.ome.tif", registered,
                                      pixel_size_nm=pixel_size_reference_nm, z_step_nm=z_step_nm)
            sets = ", ".join(f"{k} = ?" for k in rec)
            con.execute(f"UPDATE pairs SET field = ?, path_moving = ?, path_reference = ?, path_registered = ?, {sets} WHERE id = ?",
                        (field, pm.relative_to(self.root).as_posix(), pr.relative_to(self.root).as_posix(),
                         None if preg is None else preg.relative_to(self.root).as_posix(), *rec.values(), pid))
        return pid

    def records(self, **where: Any) -> list[dict[str, Any]]:
        """Index rows (dicts), optionally filtered by equality on columns (``modality_moving="widefield"``)."""
        sql, args = "SELECT * FROM pairs", []
        if where:
            bad = [k for k in where if not re.fullmatch(r"[a-z_]+", k)]
            if bad:
                raise EvaluationError(f"unknown filter column(s) {bad}")
            sql += " WHERE " + " AND ".join(f"{k} = ?" for k in where)
            args = list(where.values())
        with self._con() as con:
            try:
                return [dict(r) for r in con.execute(sql + " ORDER BY id", args)]
            except sqlite3.OperationalError as exc:
                raise EvaluationError(f"bad filter {where}: {exc}") from None

    def get(self, pair_id: int) -> Pair:
        """Load pair ``pair_id``.

        Raises:
            StateError: no such pair, or its files are missing.
        """
        rows = self.records(id=int(pair_id))
        if not rows:
            raise StateError(f"no pair with id {pair_id} in {self.db.name}; see records() for the ids")
        r = rows[0]
        try:
            mov = read_ome_tiff(self.root / r["path_moving"])[0]
            ref = read_ome_tiff(self.root / r["path_reference"])[0]
            reg = read_ome_tiff(self.root / r["path_registered"])[0] if r["path_registered"] else None
        except FileNotFoundError as exc:
            raise StateError(f"pair {pair_id}: image file missing ({exc.filename}); the store was edited by hand?") from None
        return Pair(id=r["id"], field=r["field"], moving=mov, reference=ref, moving_registered=reg, record=r)

    def training_pairs(self, ids: list[int] | None = None) -> Any:
        """Registered (moving on reference grid, reference) pairs as :class:`~cryoopt.restore.train.ImagePairs`."""
        from cryoopt.restore.train import ImagePairs

        ids = ids if ids is not None else [r["id"] for r in self.records() if r["path_registered"]]
        pairs = [self.get(i) for i in ids]
        return ImagePairs([p.moving_registered for p in pairs], [p.reference for p in pairs], [p.record for p in pairs])

    def import_folder(
        self,
        folder: str | Path,
        *,
        moving: str = "widefield",
        reference: str = "confocal",
        pixel_size_moving_nm: float | None = None,
        pixel_size_reference_nm: float | None = None,
        **kwargs: Any,
    ) -> list[int]:
        """Import real image pairs named ``<field>_<moving>.tif(f)`` and ``<field>_<reference>.tif(f)``.

        Pixel sizes come from the OME metadata when present, else the arguments.
        Fields with only one of the two images are skipped. Returns the new pair ids.
        """
        folder = Path(folder)
        if not folder.is_dir():
            raise EvaluationError(f"{folder} is not a folder of TIFF pairs")
        files = {p.name: p for p in sorted(folder.iterdir()) if p.suffix.lower() in (".tif", ".tiff")}
        found: dict[str, dict[str, Path]] = {}
        for name, p in files.items():
            base = re.sub(r"(\.ome)?\.tiff?$", "", name, flags=re.I)
            for mod in (moving, reference):
                if base.endswith("_" + mod):
                    found.setdefault(base[: -len(mod) - 1], {})[mod] = p
        ids = []
        for field, mods in sorted(found.items()):
            if len(mods) < 2:
                continue
            m, mi = read_ome_tiff(mods[moving])
            r, ri = read_ome_tiff(mods[reference])
            ids.append(self.add(m, r, modality_moving=moving, modality_reference=reference, field=field,
                                pixel_size_moving_nm=mi["pixel_size_nm"] or pixel_size_moving_nm,
                                pixel_size_reference_nm=ri["pixel_size_nm"] or pixel_size_reference_nm,
                                z_step_nm=ri["z_step_nm"] or mi["z_step_nm"], metadata={"source": str(mods[moving].name)}, **kwargs))
        return ids
