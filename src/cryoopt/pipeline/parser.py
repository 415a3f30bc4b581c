"""Stage 2, the parser: segment structures and build a graph of their relations.

EM structures (``cells``, ``nuclei``, ``mitochondria``, ``membranes``) come from a
whole-section segmenter that works in physical units
(:class:`~cryoopt.pipeline.segmentation.SectionSegmenter`: one method,
``segment_section(image, *, pixel_size_nm, ...) -> Segmentation``), found by name in
:data:`segmenters`: ``"hierarchical"`` (classical, the default) or ``"learned"`` (a U-Net
trained on simulator output at first use, :mod:`cryoopt.pipeline.learned`; needs
PyTorch). Other kinds, e.g. the LM ``targets``, and every kind when no pixel size is
given, use per-structure :class:`Segmenter` objects (one method,
``segment(image) -> label image``) registered under the structure's name. Both assume
the usual contrast: stained structures are *dark* in EM (heavy-metal stain scatters
electrons), labels are *bright* in fluorescence LM.

:func:`structure_graph` turns label images into a :class:`networkx.DiGraph` in the
spirit of a semantic scene parser: one node per object (``(kind, label)`` with
``area_px`` and ``centroid``), ``relation="contains"`` edges from a container to
each object lying mostly inside it (e.g. a labelled target in a mitochondrion), and
``relation="adjacent"`` edges (both directions) between touching objects.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage as ndi

from cryoopt.exceptions import EvaluationError
from cryoopt.pipeline._robust import location_scale
from cryoopt.pipeline._validate import check_image, check_pixel_size
from cryoopt.pipeline.segmentation import STRUCTURE_KINDS, BeadSegmenter, HierarchicalSegmenter, SectionSegmenter
from cryoopt.registry import Registry

__all__ = [
    "KnownMask",
    "MembraneSegmenter",
    "ParseResult",
    "Segmenter",
    "ThresholdSegmenter",
    "parse_section",
    "segmenters",
    "structure_graph",
]


@runtime_checkable
class Segmenter(Protocol):
    """Anything that turns a 2-D image into an integer label image (0 = background)."""

    def segment(self, image: np.ndarray) -> np.ndarray: ...


#: Segmenters by name; entries are zero-argument factories. Whole-section segmenters
#: (``"hierarchical"``, ``"learned"``) return a :class:`SectionSegmenter`; the others are
#: per-structure :class:`Segmenter` objects named after their structure kind.
segmenters: Registry = Registry("segmenter")


def _histogram(image: np.ndarray, nbins: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin centres of ``nbins`` equal bins over the image's range.

    The same bins as :func:`skimage.exposure.histogram` (``source_range="image"``),
    counted with one ``bincount`` instead of :func:`numpy.histogram` (3x faster),
    for :func:`skimage.filters.threshold_otsu`'s ``hist=`` argument."""
    lo, hi = float(image.min()), float(image.max())
    idx = ((image - lo) * ((nbins - 1e-9) / (hi - lo))).astype(np.intp)
    edges = np.linspace(lo, hi, nbins + 1)
    return np.bincount(idx.ravel(), minlength=nbins), (edges[:-1] + edges[1:]) / 2.0


@dataclass(frozen=True)
class ThresholdSegmenter:
    """Otsu threshold of a Gaussian-smoothed image, then an object-size filter.

    Args:
        polarity: ``"dark"`` (objects below threshold) or ``"bright"``.
        sigma_px: Gaussian smoothing before thresholding.
        min_area_px, max_area_px: keep objects in this area range.
    """

    polarity: str = "dark"
    sigma_px: float = 1.5
    min_area_px: int = 9
    max_area_px: int | None = None

    def segment(self, image: np.ndarray) -> np.ndarray:
        from skimage.filters import threshold_otsu
        from skimage.measure import label

        img = check_image(image)
        sm = ndi.gaussian_filter(img, self.sigma_px) if self.sigma_px > 0 else img
        if np.ptp(sm) == 0:
            return np.zeros(img.shape, np.int32)
        t = threshold_otsu(hist=_histogram(sm))
        if self.polarity == "dark":
            fg = sm < t
        elif self.polarity == "bright":
            fg = sm > t
        else:
            raise EvaluationError(f"polarity must be 'dark' or 'bright', got {self.polarity!r}")
        lab = label(fg).astype(np.int32)
        areas = np.bincount(lab.ravel())
        keep = areas >= self.min_area_px
        if self.max_area_px is not None:
            keep &= areas <= self.max_area_px
        keep[0] = False
        relabel = np.zeros(areas.size, np.int32)
        relabel[keep] = np.arange(1, int(keep.sum()) + 1)
        return relabel[lab]


@dataclass(frozen=True)
class MembraneSegmenter:
    """Thin dark ridges: black top-hat (width ``width_px``) above ``z`` robust sigmas."""

    width_px: int = 5
    z: float = 3.0

    def segment(self, image: np.ndarray) -> np.ndarray:
        from skimage.measure import label

        img = check_image(image)
        th = ndi.black_tophat(img, size=self.width_px)
        med, mad = location_scale(th)
        return label(th > med + self.z * mad).astype(np.int32)


@dataclass(frozen=True)
class KnownMask:
    """A "segmenter" that returns a known mask's connected objects (ground truth or an annotation)."""

    mask: np.ndarray = field(repr=False)

    def segment(self, image: np.ndarray) -> np.ndarray:
        if np.shape(self.mask) != np.shape(image):
            raise EvaluationError(f"known mask has shape {np.shape(self.mask)} but the image has {np.shape(image)}")
        return ndi.label(np.asarray(self.mask, bool))[0].astype(np.int32)


@functools.lru_cache(maxsize=1)
def _learned() -> SectionSegmenter:
    from cryoopt.pipeline.learned import load_or_train

    return load_or_train()


segmenters.register("hierarchical", HierarchicalSegmenter)
segmenters.register("learned", _learned)
# per-structure segmenters in pixel units: for images without a pixel size, and the LM label
segmenters.register("nuclei", lambda: ThresholdSegmenter("dark", sigma_px=3.0, min_area_px=400))
segmenters.register("mitochondria", lambda: ThresholdSegmenter("dark", sigma_px=1.0, min_area_px=9, max_area_px=399))
segmenters.register("membranes", MembraneSegmenter)
# stained material (cells, neurites) against the brighter embedding resin
segmenters.register("cells", lambda: ThresholdSegmenter("dark", sigma_px=2.0, min_area_px=50))
segmenters.register("targets", lambda: ThresholdSegmenter("bright", sigma_px=1.0, min_area_px=4))
# fiducial beads on a film (the EM target structures of a bead-calibration specimen)
segmenters.register("beads", BeadSegmenter)


@dataclass(frozen=True)
class ParseResult:
    """Label images by structure kind, and their relation graph."""

    labels: Mapping[str, np.ndarray]
    graph: object = field(repr=False)

    def count(self, kind: str) -> int:
        return int(self.labels[kind].max()) if kind in self.labels else 0

    def mask(self, kind: str) -> np.ndarray:
        return self.labels[kind] > 0


def _pairs(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique (a, b) label pairs and their pixel counts over ``where``."""
    av = a[where].astype(np.int64)
    bv = b[where].astype(np.int64)
    key = av * (int(b.max()) + 1) + bv
    uniq, counts = np.unique(key, return_counts=True)
    return np.column_stack([uniq // (int(b.max()) + 1), uniq % (int(b.max()) + 1)]), counts


def structure_graph(labels: Mapping[str, np.ndarray], *, containment: float = 0.5):
    """Graph of objects and their relations (see module docstring).

    Args:
        labels: structure kind -> integer label image, all of one shape.
        containment: an object is inside another when at least this fraction of
            its pixels lies in it.

    Returns:
        :class:`networkx.DiGraph` with nodes ``(kind, label)``.
    """
    import networkx as nx

    kinds = list(labels)
    shapes = {np.asarray(v).shape for v in labels.values()}
    if len(shapes) > 1:
        raise EvaluationError(f"label images differ in shape: {shapes}; resample them to one grid")
    g = nx.DiGraph()
    areas: dict[str, np.ndarray] = {}
    for kind in kinds:
        lab = np.asarray(labels[kind])
        if lab.dtype.kind not in "iu":
            raise EvaluationError(f"labels[{kind!r}] must be an integer label image, got {lab.dtype}")
        n = int(lab.max()) if lab.size else 0
        areas[kind] = np.bincount(lab.ravel(), minlength=n + 1)
        if n:
            cents = ndi.center_of_mass(np.ones(lab.shape), lab, range(1, n + 1))
            for i in range(1, n + 1):
                if areas[kind][i]:
                    g.add_node((kind, i), kind=kind, area_px=int(areas[kind][i]), centroid=tuple(map(float, cents[i - 1])))
    for ka in kinds:
        a = np.asarray(labels[ka])
        if not a.max():
            continue
        grown = ndi.grey_dilation(a, size=3)
        for kb in kinds:
            b = np.asarray(labels[kb])
            if not b.max():
                continue
            if ka != kb:
                pairs, counts = _pairs(a, b, (a > 0) & (b > 0))
                for (i, j), c in zip(pairs, counts):
                    if c >= containment * areas[ka][i]:
                        g.add_edge((kb, int(j)), (ka, int(i)), relation="contains")
            touch = (grown > 0) & (b > 0) & ((a != grown) | (ka != kb))
            pairs, _ = _pairs(grown, b, touch)
            for i, j in pairs:
                if (ka, i) == (kb, j) or g.has_edge((kb, int(j)), (ka, int(i))) or g.has_edge((ka, int(i)), (kb, int(j))):
                    continue
                g.add_edge((ka, int(i)), (kb, int(j)), relation="adjacent")
                g.add_edge((kb, int(j)), (ka, int(i)), relation="adjacent")
    return g


def parse_section(
    em_image: np.ndarray,
    lm_image: np.ndarray | None = None,
    *,
    structures: tuple[str, ...] = ("nuclei", "mitochondria", "membranes"),
    lm_structures: tuple[str, ...] = ("targets",),
    segmenter_overrides: Mapping[str, Segmenter] | None = None,
    with_graph: bool = True,
    pixel_size_nm: float | None = None,
    segmenter: str | SectionSegmenter = "hierarchical",
    reference_intensity: float | None = None,
    ignore: np.ndarray | None = None,
) -> ParseResult:
    """Segment ``structures`` in EM (and ``lm_structures`` in LM) and relate them.

    With ``pixel_size_nm`` (EM), the EM kinds the section segmenter knows
    (:data:`~cryoopt.pipeline.segmentation.STRUCTURE_KINDS`) come from ``segmenter`` (a
    name in :data:`segmenters` or a :class:`SectionSegmenter`), which sees
    ``reference_intensity`` (bare resin / open beam, if known) and ``ignore`` (artifact
    pixels); without it every kind uses its per-structure segmenter (pixel units).
    ``segmenter_overrides`` replace either for the kinds they name.

    Objects of the LM kinds are only related in the graph when the LM image is on
    the EM grid (same shape), e.g. after :meth:`RegistrationResult.warp`.
    Mitochondria that fall inside a nucleus are removed (the nucleus wins).
    """
    em = check_image(em_image, name="em_image")
    overrides = dict(segmenter_overrides or {})
    section: dict[str, np.ndarray] = {}
    wanted = [k for k in structures if k in STRUCTURE_KINDS and k not in overrides]
    if pixel_size_nm is not None and wanted:
        px = check_pixel_size(pixel_size_nm, name="pixel_size_nm")
        seg = segmenters.get(segmenter)() if isinstance(segmenter, str) else segmenter
        if not isinstance(seg, SectionSegmenter):
            raise EvaluationError(f"segmenter {segmenter!r} is no section segmenter (it needs segment_section(image, *, pixel_size_nm))")
        result = seg.segment_section(em, pixel_size_nm=px, reference_intensity=reference_intensity, ignore=ignore)
        section = {k: np.asarray(result.labels[k]) for k in wanted}
        for k, lab in section.items():
            if lab.shape != em.shape or lab.dtype.kind not in "iu":
                raise EvaluationError(f"segmenter {segmenter!r} returned {lab.dtype} {lab.shape} for {k!r}; need integer labels of {em.shape}")

    def seg(kind: str, img: np.ndarray) -> np.ndarray:
        s = overrides.get(kind) or segmenters.get(kind)()
        lab = np.asarray(s.segment(img))
        if lab.shape != img.shape or lab.dtype.kind not in "iu":
            raise EvaluationError(f"segmenter for {kind!r} returned {lab.dtype} {lab.shape}; need integer labels of {img.shape}")
        return lab

    labels = {k: section[k] if k in section else seg(k, em) for k in structures}
    if "nuclei" in labels and "mitochondria" in labels:
        m = labels["mitochondria"].copy()
        m[labels["nuclei"] > 0] = 0
        labels["mitochondria"] = m
    if lm_image is not None:
        lm = check_image(lm_image, name="lm_image")
        for k in lm_structures:
            labels[k] = seg(k, lm)
    same = {k: v for k, v in labels.items() if v.shape == em.shape}
    return ParseResult(labels, structure_graph(same) if with_graph else None)
