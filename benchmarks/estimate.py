"""Seeing without ground truth: how well the estimate path sees what the simulator knows.

Four experiments, each on specimens no method was tuned or trained on (specimen seeds
200+; the learned segmenter trains on seeds 100-103):

1. ``seg``: EM segmentation IoU per structure class and phantom (neurons, tissue_block,
   bead_calibration), and the membranes' boundary F-score (BSDS tolerance), on held-out
   sections of random depth, thickness (50-250 nm), stain contrast, dose and pixel size
   (15-40 nm): the classical hierarchical segmenter, the same told the open-beam
   intensity (what the instrument's dose and gain give), and the learned U-Net
   (``--learned``; trains at first use, cached).
2. ``reg``: LM -> EM registration *without pixel sizes* (rotation 0-360 deg, scale 1.3-3.3,
   offsets up to a quarter field): target registration error at the labelled targets,
   in EM and LM pixels, refusals, and wrong acceptances (TRE > 5 EM px); then with the EM
   section compressed 20-40 % (compression search + non-rigid step; the affine alone on
   the same matches reported beside it); then the same pairs again with fiducial beads
   on the section (``cryoopt.sim.datasets.Fiducials``, opt-in), with the paired gain.
3. ``screen``: ribbon overviews cut by the sectioning model over random protocols (10 %
   folds, 10 % contamination): precision and recall of ``good`` against the truth, the
   confusion matrix, and the EM time saved at 20 min per section and 2 min per overview.
4. ``env``: ``cryoopt/CLEMProtocol-v0`` blocks (the ``bo_only`` agent holding each
   protocol) with ``structures="estimate", registration="estimate"`` versus ``"known"``,
   paired on the same specimen and seed: Spearman of block quality over >= 24 Sobol
   protocols per phantom, and the mean relative bias with a bootstrap 95 % interval.

Prints a table per experiment and writes ``benchmarks/results/estimate.json``.
Run: ``OMP_NUM_THREADS=1 python benchmarks/estimate.py [--quick] [--learned] [--parts seg,reg,screen,env]``.
Timings are contaminated by whatever else the machine runs: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
PRESETS = ("neurons", "tissue_block", "bead_calibration")
#: boundary-match tolerance of the membrane F-score, a fraction of the image diagonal
#: (the Berkeley segmentation benchmark's 0.0075; Martin, Fowlkes & Malik 2004)
BOUNDARY_TOLERANCE = 0.0075
CLASSES = ("cells", "nuclei", "mitochondria", "membranes")


def _load() -> float:
    try:
        return float(os.getloadavg()[0])
    except OSError:
        return math.nan


def _boot_ci(x: np.ndarray, stat=np.mean, n: int = 2000, seed: int = 0) -> tuple[float, float]:
    x = np.asarray(x, float)
    if x.size < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    vals = [stat(x[rng.integers(0, x.size, x.size)]) for _ in range(n)]
    return float(np.percentile(vals, 2.5)), float(np.percentile(vals, 97.5))


# -- 1. segmentation ------------------------------------------------------------------------
def _membrane_kinds(masks: dict) -> dict:
    """The true membranes split by what they bound: the nuclear envelope (within 3 px of a
    nucleus), mitochondrial membranes, and plasma membranes (the rest)."""
    from scipy import ndimage as ndi

    mem, mito = masks["membranes"], masks["mitochondria"]
    env = mem & ndi.binary_dilation(masks["nuclei"], iterations=3) & ~mito
    return {"envelope": env, "mitochondrial": mem & mito, "plasma": mem & ~env & ~mito}


def membrane_reference(sections: list) -> dict:
    """What a pixel IoU of these one-pixel membranes allows: the truth against itself moved by
    one pixel (mean of the four directions) and grown by one pixel (4-connected), pooled; and
    how continuous the truth is (true pixels per 8-connected piece: a dotted line has few)."""
    from scipy import ndimage as ndi

    pixels = sum(int(np.count_nonzero(s.masks["membranes"])) for s in sections)
    pieces = sum(ndi.label(s.masks["membranes"], np.ones((3, 3), bool))[1] for s in sections)
    out: dict = {"pixels": pixels, "pieces": int(pieces), "pixels_per_piece": pixels / pieces if pieces else None}
    for name, f in (("shifted_1px", lambda m: [np.roll(m, s, a) for a in (0, 1) for s in (-1, 1)]),
                    ("dilated_1px", lambda m: [ndi.binary_dilation(m)])):
        i = u = 0
        for s in sections:
            b = s.masks["membranes"]
            for a in f(b):
                i += int(np.count_nonzero(a & b))
                u += int(np.count_nonzero(a | b))
        out[name] = i / u if u else None
    return out


def bench_segmentation(quick: bool, learned: bool, seeds: tuple[int, ...] = (200, 201, 202, 203)) -> dict:
    from cryoopt.pipeline.segmentation import HierarchicalSegmenter, boundary_f_score
    from cryoopt.sim.datasets import random_em_sections

    methods = {"hierarchical": HierarchicalSegmenter(), "hierarchical+I0": HierarchicalSegmenter()}
    if learned:
        from cryoopt.pipeline.learned import load_or_train

        t0 = time.perf_counter()
        methods["learned"] = methods["learned+I0"] = load_or_train(progress=True)
        print(f"learned segmenter ready in {time.perf_counter() - t0:.0f} s (load {_load():.1f})")
    seeds = tuple(seeds)[:2] if quick else tuple(seeds)
    per = 4 if quick else 8
    sections = list(random_em_sections(PRESETS, seeds=seeds, per_specimen=per, size=128, rng=2024))
    out: dict = {"n_sections": len(sections), "seeds": list(seeds), "methods": {},
                 "membranes_truth_against_itself": membrane_reference(sections)}
    for name, seg in methods.items():
        inter = {(p, c): 0 for p in PRESETS for c in CLASSES}
        union = dict(inter)
        per_sec: dict = {(p, c): [] for p in PRESETS for c in CLASSES}
        sec_ids: dict = {(p, c): [] for p in PRESETS for c in CLASSES}  # which sections (index in the run) those are
        false_area: dict = {p: [] for p in PRESETS}
        bf: dict = {p: [] for p in PRESETS}  # membrane boundary P, R, F per section with membranes
        bf_ids: dict = {p: [] for p in PRESETS}
        kinds = {k: [0, 0] for k in ("plasma", "envelope", "mitochondrial")}  # true membrane pixels found, of all
        t0 = time.perf_counter()
        for j, s in enumerate(sections):
            ref = s.params["dose_e_per_px"] if name.endswith("+I0") else None
            pred = seg.segment_section(s.em, pixel_size_nm=s.pixel_size_nm, reference_intensity=ref)
            p = s.params["specimen"]
            for c in CLASSES:
                a, b = pred.mask(c), s.masks[c]
                i, u = int(np.count_nonzero(a & b)), int(np.count_nonzero(a | b))
                inter[p, c] += i
                union[p, c] += u
                if b.any():
                    per_sec[p, c].append(i / u)
                    sec_ids[p, c].append(j)
            if not s.masks["cells"].any():
                false_area[p].append(float(pred.mask("cells").mean()))
            if s.masks["membranes"].any():  # BSDS tolerance: 0.75 % of the image diagonal
                bf[p].append(boundary_f_score(pred.mask("membranes"), s.masks["membranes"],
                                              tolerance_px=BOUNDARY_TOLERANCE * math.hypot(*s.em.shape)))
                bf_ids[p].append(j)
                for k, m in _membrane_kinds(s.masks).items():
                    kinds[k][0] += int(np.count_nonzero(m & pred.mask("membranes")))
                    kinds[k][1] += int(np.count_nonzero(m))
        dt = (time.perf_counter() - t0) / len(sections)
        res = {}
        for p in PRESETS:
            for c in CLASSES:
                vals = np.array(per_sec[p, c])
                res[f"{p}/{c}"] = {
                    "pooled_iou": inter[p, c] / union[p, c] if union[p, c] else None,
                    "mean_iou": float(vals.mean()) if vals.size else None,
                    "ci95": _boot_ci(vals) if vals.size > 1 else None,
                    "n_sections_with_class": int(vals.size),
                    "per_section": [float(v) for v in vals],  # in section order: paired across runs
                    "per_section_ids": sec_ids[p, c],  # the sections they are of (a truth change may add or drop some)
                }
            res[f"{p}/false_cell_area_when_none"] = float(np.mean(false_area[p])) if false_area[p] else None
            prf = np.array(bf[p]).reshape(-1, 3)
            res[f"{p}/membrane_boundary"] = {
                "precision": float(prf[:, 0].mean()) if len(prf) else None, "recall": float(prf[:, 1].mean()) if len(prf) else None,
                "f_score": float(prf[:, 2].mean()) if len(prf) else None,
                "f_ci95": _boot_ci(prf[:, 2]) if len(prf) > 1 else None, "n_sections": int(len(prf)),
                "per_section_f": [float(v) for v in prf[:, 2]],  # in section order: paired across runs
                "per_section_ids": bf_ids[p],
            }
        for c in CLASSES:
            i = sum(inter[p, c] for p in PRESETS)
            u = sum(union[p, c] for p in PRESETS)
            res[f"all/{c}"] = {"pooled_iou": i / u if u else None}
        prf = np.array([x for p in PRESETS for x in bf[p]]).reshape(-1, 3)
        res["all/membrane_boundary"] = {"precision": float(prf[:, 0].mean()), "recall": float(prf[:, 1].mean()),
                                        "f_score": float(prf[:, 2].mean()), "f_ci95": _boot_ci(prf[:, 2]),
                                        "n_sections": int(len(prf)), "tolerance": "0.75 % of the image diagonal (BSDS)"}
        res["all/membrane_recall_by_kind"] = {k: (f / n if n else None) for k, (f, n) in kinds.items()}
        out["methods"][name] = {"iou": res, "seconds_per_section": dt, "load": _load()}
    print("\n== Segmentation IoU (pooled over held-out sections; mean per section where the class is present) ==")
    print(f"{'method':<17}{'phantom':<18}" + "".join(f"{c:>20}" for c in CLASSES))
    for name, r in out["methods"].items():
        for p in (*PRESETS, "all"):
            cells = []
            for c in CLASSES:
                v = r["iou"][f"{p}/{c}"]
                pooled = v["pooled_iou"]
                mean = v.get("mean_iou")
                txt = "-" if pooled is None else f"{pooled:.2f}" + (f" ({mean:.2f},n{v['n_sections_with_class']})" if mean is not None else "")
                cells.append(f"{txt:>20}")
            print(f"{name:<17}{p:<18}" + "".join(cells))
        mb = r["iou"]["all/membrane_boundary"]
        print(f"{'':<17}membrane boundary P {mb['precision']:.2f} R {mb['recall']:.2f} F {mb['f_score']:.2f} "
              f"({mb['f_ci95'][0]:.2f}-{mb['f_ci95'][1]:.2f}, n{mb['n_sections']}; tolerance 0.75 % of the diagonal)")
        rk = r["iou"]["all/membrane_recall_by_kind"]
        print(f"{'':<17}true membrane pixels found: " + ", ".join(f"{k} {v:.2f}" for k, v in rk.items() if v is not None))
        print(f"{'':<17}{r['seconds_per_section'] * 1000:.0f} ms/section (load {r['load']:.1f})")
    ref = out["membranes_truth_against_itself"]
    print(f"membranes: the truth against itself moved by 1 px IoU {ref['shifted_1px']:.2f}, grown by 1 px {ref['dilated_1px']:.2f}; "
          f"{ref['pixels']} true pixels in {ref['pieces']} 8-connected pieces")
    return out


def _per_section_differences(new: dict, baseline: dict, entry: str, field: str) -> list[float]:
    """Per-section ``new - baseline`` of ``field`` in each phantom's ``entry`` (a class or the
    membrane boundary), over the sections both runs scored: matched by section where both runs
    record which sections they scored (a change of the truth may add or drop sections with a
    class), else by position in the phantoms where both scored as many."""
    d: list[float] = []
    for p in PRESETS:
        a, b = new["iou"][f"{p}/{entry}"], baseline["iou"][f"{p}/{entry}"]
        x, y = a.get(field), b.get(field)
        if x is None or y is None:
            continue
        if "per_section_ids" in a and "per_section_ids" in b:
            by_id = dict(zip(b["per_section_ids"], y))
            d += [xi - by_id[i] for i, xi in zip(a["per_section_ids"], x) if i in by_id]
        elif len(x) == len(y):
            d += [xi - yi for xi, yi in zip(x, y)]
    return d


def paired_segmentation(new: dict, baseline: dict) -> dict:
    """Per-section IoU differences (new - baseline) of each method both runs scored, on the
    same held-out sections, pooled over the phantoms, with bootstrap 95 % intervals."""
    out: dict = {}
    for name, r in new["methods"].items():
        b = baseline.get("methods", {}).get(name)
        if b is None:
            continue
        for c in CLASSES:
            d = _per_section_differences(r, b, c, "per_section")
            if d:
                out[f"{name}/{c}"] = {"mean_difference": float(np.mean(d)), "ci95": _boot_ci(np.array(d)), "n_sections": len(d)}
        mb, bb = r["iou"].get("all/membrane_boundary"), b["iou"].get("all/membrane_boundary")
        if mb and bb:
            out[f"{name}/membrane_boundary_f"] = row = {"new": mb["f_score"], "baseline": bb["f_score"]}
            d = _per_section_differences(r, b, "membrane_boundary", "per_section_f")
            if d:
                row.update(mean_difference=float(np.mean(d)), ci95=_boot_ci(np.array(d)), n_sections=len(d))
    print("\n== Segmentation, paired per-section IoU difference against the baseline run (same sections) ==")
    for k, v in out.items():
        if "ci95" in v:
            print(f"{k:<32}{v['mean_difference']:+.3f} [{v['ci95'][0]:+.3f}, {v['ci95'][1]:+.3f}] (n{v['n_sections']})")
    return out


# -- 2. registration --------------------------------------------------------------------------
def _tre_at_targets(pair, result, *, lm_field_only: bool = False) -> np.ndarray:
    """Error (EM px) at each labelled target inside the EM field; with ``lm_field_only``, at
    those the LM image shows too (a target outside the LM field is no target of a correlation:
    the registration can only extrapolate there)."""
    t = pair.target_points_em()
    if len(t) == 0:
        return np.zeros(0)
    und = pair.deformation.inverse(t)
    inv = np.linalg.inv(pair.lm_affine)
    lm_xy = und @ inv[:2, :2].T + inv[:2, 2]
    err = np.sqrt(np.sum((result.apply(lm_xy) - t) ** 2, axis=1))
    if lm_field_only:
        h, w = pair.lm.shape
        err = err[(lm_xy[:, 0] >= 0) & (lm_xy[:, 0] <= w - 1) & (lm_xy[:, 1] >= 0) & (lm_xy[:, 1] <= h - 1)]
    return err


def _rms(err: np.ndarray) -> float:
    return float(np.sqrt(np.mean(err**2))) if err.size else math.nan


def _estimated_at_targets(pair, result) -> float:
    """RMS of the registration's own TRE estimate (:meth:`RegistrationResult.tre_at`) at the
    targets ``tre_em_px`` is measured at (NaN where the code has no ``tre_at``)."""
    t = pair.target_points_em()
    if not hasattr(result, "tre_at") or len(t) == 0:
        return math.nan
    return _rms(result.tre_at(t))


def claim_summary(rows: list[dict]) -> dict:
    """What the accepted sections claim at their targets against what they are: of those
    claiming an RMS TRE below 1 px there, how many are (the claim's precision, target >= 95 %);
    the fraction whose actual RMS TRE there is at most the estimate (coverage), and the median
    ratio estimate / actual (an estimate far above the truth everywhere is no use either)."""
    acc = [r for r in rows if not r["refused"] and math.isfinite(r.get("tre_em_px", math.nan))
           and math.isfinite(r.get("estimated_tre_at_targets_px", math.nan))]
    est = np.array([r["estimated_tre_at_targets_px"] for r in acc])
    act = np.array([r["tre_em_px"] for r in acc])
    claim = est < 1.0
    covered = (act <= est).astype(float)
    return {
        "accepted_with_estimate": len(acc),
        "claim_below_1_px": int(claim.sum()),
        "claim_below_1_px_true": int(np.sum(claim & (act < 1.0))),
        "claim_precision": float(np.mean(act[claim] < 1.0)) if claim.any() else None,
        "claim_precision_ci95": _boot_ci((act[claim] < 1.0).astype(float)) if claim.sum() > 1 else None,
        "coverage": float(covered.mean()) if acc else None,
        "coverage_ci95": _boot_ci(covered) if len(acc) > 1 else None,
        "median_ratio_estimate_to_actual": float(np.median(est / np.maximum(act, 1e-9))) if acc else None,
        "truly_below_1_px_claiming_more": int(np.sum(~claim & (act < 1.0))),
    }


def _fmt(value: float | None, ci95: tuple[float, float] | None = None) -> str:
    """A table cell: ``-`` for no value, else two decimals, with its 95 % interval when given."""
    if value is None:
        return "-"
    return f"{value:.2f}" + ("" if ci95 is None else f" ({ci95[0]:.2f}-{ci95[1]:.2f})")


def _below_1_px(row: dict, key: str = "tre_em_px") -> float:
    """1 if the section was accepted with an RMS TRE below 1 EM px at its targets, else 0
    (refused, or accepted with no target to measure)."""
    v = row.get(key, math.nan)
    return float(not row["refused"] and math.isfinite(v) and v < 1.0)


def paired_registration(current: dict, baseline: dict) -> dict:
    """Per-section difference (this code minus ``baseline``, same sections in the same order)
    of the fraction below 1 px and of wrong acceptances (TRE > 5 px), with bootstrap 95 %
    intervals, per variant."""
    out = {}
    for variant, cur in current.items():
        if not isinstance(cur, dict) or "pairs" not in cur or variant not in baseline:
            continue
        a, b = baseline[variant]["pairs"], cur["pairs"]
        if len(a) != len(b) or any(x["specimen"] != y["specimen"] or abs(x["rotation_deg"] - y["rotation_deg"]) > 1e-9
                                   for x, y in zip(a, b)):
            out[variant] = "not paired: the baseline ran on other sections"
            continue

        def wrong(r):
            return float(not r["refused"] and math.isfinite(r["tre_em_px"]) and r["tre_em_px"] > 5.0)

        d = np.array([_below_1_px(y) - _below_1_px(x) for x, y in zip(a, b)])
        w = np.array([wrong(y) - wrong(x) for x, y in zip(a, b)])
        row = {"sections": len(d), "baseline_below_1_px": float(np.mean([_below_1_px(x) for x in a])),
               "below_1_px": float(np.mean([_below_1_px(y) for y in b])),
               "diff_below_1_px": float(d.mean()), "diff_below_1_px_ci95": _boot_ci(d),
               "baseline_wrong": int(sum(wrong(x) for x in a)), "wrong": int(sum(wrong(y) for y in b)),
               "diff_wrong_fraction_ci95": _boot_ci(w),
               "baseline_refused": int(sum(x["refused"] for x in a)), "refused": int(sum(y["refused"] for y in b))}
        if all("tre_lm_field_em_px" in x for x in a):
            dl = np.array([_below_1_px(y, "tre_lm_field_em_px") - _below_1_px(x, "tre_lm_field_em_px") for x, y in zip(a, b)])
            row.update(diff_below_1_px_lm_field=float(dl.mean()), diff_below_1_px_lm_field_ci95=_boot_ci(dl))
        out[variant] = row
    return out


def _affine_only(result):
    """The same registration without its non-rigid part (the affine fitted on the same matches)."""
    import dataclasses

    return dataclasses.replace(result, displacement=None)


def bench_registration(quick: bool, seeds: tuple[int, ...] = (300, 301, 302), only: tuple[str, ...] | None = None) -> dict:
    """The registration part; ``only`` runs a subset of the variants (a change that touches only
    compressed sections needs no rerun of the others)."""
    from cryoopt.exceptions import RegistrationError
    from cryoopt.pipeline.registration import register_lm_em
    from cryoopt.sim.datasets import Fiducials, random_clem_pairs

    out: dict = {}
    per = 3 if quick else 8
    seeds = tuple(seeds)[: 2 if quick else len(seeds)]
    out["seeds"] = list(seeds)
    # the same pairs with and without fiducial beads (they draw from a generator of their own)
    variants = (("similar", (0.0, 0.0), None), ("compressed", (0.2, 0.4), None),
                ("similar+fiducials", (0.0, 0.0), Fiducials()), ("compressed+fiducials", (0.2, 0.4), Fiducials()))
    for variant, comp, fid in variants:
        if only is not None and variant not in only:
            continue
        rows = []
        for pair in random_clem_pairs(PRESETS, seeds=seeds, per_specimen=per, compression=comp, fiducials=fid,
                                      rng=7 if comp[1] == 0 else 8):
            t0 = time.perf_counter()
            row = {"specimen": pair.params["specimen"], "rotation_deg": pair.params["rotation_deg"],
                   "scale": float(np.hypot(pair.lm_affine[0, 0], pair.lm_affine[1, 0])),
                   "em_px_per_lm_px": float(pair.lm_pixel_size_nm / pair.pixel_size_nm),
                   "compression": float(pair.deformation.compression)}
            try:
                kw = {"max_compression": 0.5, "elastic": True} if comp[1] > 0 else {}
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    r = register_lm_em(pair.lm, pair.em, lm_polarity="bright", em_polarity="dark", **kw)
                err = _tre_at_targets(pair, r)
                row.update(refused=False, tre_em_px=_rms(err), tre_lm_field_em_px=_rms(_tre_at_targets(pair, r, lm_field_only=True)),
                           estimated_tre_px=float(r.tre_px), n_matches=r.n_matches, method=r.method, model=r.model,
                           estimated_tre_at_targets_px=_estimated_at_targets(pair, r))
                if r.displacement is not None:
                    err_a = _tre_at_targets(pair, _affine_only(r))
                    row["tre_affine_only_em_px"] = float(np.sqrt(np.mean(err_a**2))) if err_a.size else math.nan
                else:
                    row["tre_affine_only_em_px"] = row["tre_em_px"]
            except RegistrationError as exc:
                row.update(refused=True, reason=str(exc)[:160])
            row["seconds"] = time.perf_counter() - t0
            rows.append(row)
            print(f"  reg {variant:<21} {row['specimen']:<16} " + ("refused" if row["refused"] else
                  f"TRE {row['tre_em_px']:.2f} EM px ({row['model']}, affine alone {row['tre_affine_only_em_px']:.2f})"), flush=True)
        summary = {}
        for p in (*PRESETS, "all"):
            sel = [r for r in rows if p == "all" or r["specimen"] == p]
            acc = [r for r in sel if not r["refused"] and math.isfinite(r["tre_em_px"])]
            tre = np.array([r["tre_em_px"] for r in acc])
            tre_aff = np.array([r["tre_affine_only_em_px"] for r in acc])
            tre_lm = np.array([r["tre_em_px"] / r["em_px_per_lm_px"] for r in acc])
            below_f = np.array([_below_1_px(r, "tre_lm_field_em_px") for r in sel])
            tre_f = np.array([r["tre_lm_field_em_px"] for r in acc if math.isfinite(r.get("tre_lm_field_em_px", math.nan))])
            n = len(sel)
            below = np.array([0.0 if r["refused"] or not math.isfinite(r["tre_em_px"]) else float(r["tre_em_px"] < 1.0) for r in sel])
            summary[p] = {
                "sections": n, "refused": sum(r["refused"] for r in sel),
                "accepted_without_targets_in_field": sum(1 for r in sel if not r["refused"] and not math.isfinite(r["tre_em_px"])),
                "tre_below_1_em_px_of_all": float(np.sum(tre < 1.0) / n) if n else None,
                "tre_below_1_em_px_of_all_ci95": _boot_ci(below) if n > 1 else None,
                "tre_below_1_lm_px_of_all": float(np.sum(tre_lm < 1.0) / n) if n else None,
                "tre_below_1_em_px_of_accepted": float(np.mean(tre < 1.0)) if tre.size else None,
                "affine_only_tre_below_1_em_px_of_all": float(np.sum(tre_aff < 1.0) / n) if n else None,
                "wrong_accepted_tre_above_5_em_px": int(np.sum(tre > 5.0)),
                # the same at the targets both images show (inside the LM field too)
                "tre_below_1_em_px_lm_field_of_all": float(below_f.mean()) if n else None,
                "tre_below_1_em_px_lm_field_of_all_ci95": _boot_ci(below_f) if n > 1 else None,
                "wrong_accepted_lm_field_tre_above_5_em_px": int(np.sum(tre_f > 5.0)),
                "median_tre_em_px": float(np.median(tre)) if tre.size else None,
                "median_affine_only_tre_em_px": float(np.median(tre_aff)) if tre_aff.size else None,
                "seconds_per_pair": float(np.mean([r["seconds"] for r in sel])) if sel else None,
                **claim_summary(sel),
            }
        out[variant] = {"summary": summary, "pairs": rows, "load": _load()}
    # paired: the same sections with and without fiducials
    for base in ("similar", "compressed"):
        if base not in out or f"{base}+fiducials" not in out:
            continue
        a, b = out[base]["pairs"], out[f"{base}+fiducials"]["pairs"]

        d = np.array([_below_1_px(y) - _below_1_px(x) for x, y in zip(a, b)])
        out[f"{base}+fiducials"]["paired_gain_below_1_px"] = {"mean": float(d.mean()), "ci95": _boot_ci(d)}
    print("\n== Registration without pixel sizes: fraction of all sections with TRE < 1 px at the targets ==")
    print(f"{'variant':<22}{'phantom':<18}{'n':>4}{'refused':>9}{'<1 EM px':>10}{'<1 in LM':>10}{'<1 LM px':>10}{'<1 EM px|acc':>14}"
          f"{'affine<1':>10}{'wrong':>7}{'median':>8}{'s/pair':>8}")
    for variant, r in out.items():
        if variant == "seeds":
            continue
        for p, s_ in r["summary"].items():
            f = _fmt
            print(f"{variant:<22}{p:<18}{s_['sections']:>4}{s_['refused']:>9}{f(s_['tre_below_1_em_px_of_all']):>10}"
                  f"{f(s_['tre_below_1_em_px_lm_field_of_all']):>10}{f(s_['tre_below_1_lm_px_of_all']):>10}{f(s_['tre_below_1_em_px_of_accepted']):>14}"
                  f"{f(s_['affine_only_tre_below_1_em_px_of_all']):>10}"
                  f"{s_['wrong_accepted_tre_above_5_em_px']:>7}{f(s_['median_tre_em_px']):>8}{f(s_['seconds_per_pair']):>8}")
        if "paired_gain_below_1_px" in r:
            g = r["paired_gain_below_1_px"]
            print(f"  paired gain from fiducials (fraction < 1 px): {g['mean']:+.2f} (95 % CI {g['ci95'][0]:+.2f}, {g['ci95'][1]:+.2f})")
    print("\n== What accepted sections claim at their targets (RegistrationResult.tre_at) against the truth ==")
    print(f"{'variant':<22}{'phantom':<18}{'accepted':>9}{'claim<1':>9}{'true':>6}{'precision (95 % CI)':>22}"
          f"{'coverage (95 % CI)':>22}{'median est/act':>16}{'<1 claiming more':>18}")
    for variant, r in out.items():
        if variant == "seeds":
            continue
        for p, s_ in r["summary"].items():
            ci = _fmt
            print(f"{variant:<22}{p:<18}{s_['accepted_with_estimate']:>9}{s_['claim_below_1_px']:>9}{s_['claim_below_1_px_true']:>6}"
                  f"{ci(s_['claim_precision'], s_['claim_precision_ci95']):>22}{ci(s_['coverage'], s_['coverage_ci95']):>22}"
                  f"{_fmt(s_['median_ratio_estimate_to_actual']):>16}"
                  f"{s_['truly_below_1_px_claiming_more']:>18}")
    return out


# -- 3. screening -------------------------------------------------------------------------------
def bench_screening(quick: bool) -> dict:
    from cryoopt.pipeline.screening import SECTION_CLASSES, em_time_saved, screen_ribbon, screening_context
    from cryoopt.sim.overview import cut_ribbon, render_ribbon

    rng = np.random.default_rng(99)
    n_ribbons = 12 if quick else 40
    conf: dict = {}
    per_ribbon = []
    contexts = []
    t_total = 0.0
    for k in range(n_ribbons):
        thick = float(rng.uniform(60.0, 200.0))
        speed = float(math.exp(rng.uniform(math.log(0.3), math.log(3.0))))
        q = cut_ribbon({"section_thickness_nm": thick, "cutting_speed_mm_s": speed}, 12, rng=int(rng.integers(1 << 30)),
                       knife_wear=float(rng.uniform(0.0, 0.4)))
        ov = render_ribbon(q, rng=int(rng.integers(1 << 30)), fold_probability=0.1, contamination_probability=0.1)
        t0 = time.perf_counter()
        res = screen_ribbon(ov.image, pixel_size_nm=ov.pixel_size_nm, target_thickness_nm=thick)
        t_total += time.perf_counter() - t0
        contexts.append(screening_context(res, face_length_um=80.0).tolist())
        pred_good, true_good = [], []
        for truth in ov.sections:
            got = max(res.sections, key=lambda s: np.count_nonzero(s.mask & truth.mask))
            if not np.count_nonzero(got.mask & truth.mask):
                got_label = "missed"
            else:
                got_label = got.label
            conf[(truth.label, got_label)] = conf.get((truth.label, got_label), 0) + 1
            pred_good.append(got_label == "good")
            true_good.append(truth.good)
        p, t = np.array(pred_good), np.array(true_good)
        per_ribbon.append({"tp": int(np.sum(p & t)), "fp": int(np.sum(p & ~t)), "fn": int(np.sum(~p & t)),
                           "time": em_time_saved(p, t), "protocol": {"thickness_nm": thick, "speed_mm_s": speed}})
    tp = sum(r["tp"] for r in per_ribbon)
    fp = sum(r["fp"] for r in per_ribbon)
    fn = sum(r["fn"] for r in per_ribbon)
    counts = np.array([[r["tp"], r["fp"], r["fn"]] for r in per_ribbon], float)
    boot = np.random.default_rng(1).integers(0, len(counts), (2000, len(counts)))
    sums = counts[boot].sum(axis=1)  # ribbons resampled, counts pooled
    prec_b = sums[:, 0] / np.maximum(sums[:, 0] + sums[:, 1], 1)
    rec_b = sums[:, 0] / np.maximum(sums[:, 0] + sums[:, 2], 1)
    saved = np.array([r["time"]["fraction_saved"] for r in per_ribbon])
    bad_avoided = sum(r["time"]["bad_minutes_without"] - r["time"]["bad_minutes_with"] for r in per_ribbon)
    missed = sum(r["time"]["good_missed"] for r in per_ribbon)
    out = {
        "ribbons": n_ribbons, "sections": int(sum(conf.values())),
        "precision_good": tp / max(tp + fp, 1), "recall_good": tp / max(tp + fn, 1),
        "precision_ci95_over_ribbons": (float(np.percentile(prec_b, 2.5)), float(np.percentile(prec_b, 97.5))),
        "recall_ci95_over_ribbons": (float(np.percentile(rec_b, 2.5)), float(np.percentile(rec_b, 97.5))),
        "em_time_fraction_saved": float(saved.mean()), "em_time_fraction_saved_ci95": _boot_ci(saved),
        "em_minutes_on_bad_sections_avoided": float(bad_avoided), "good_sections_missed": float(missed),
        "confusion": {f"{a}->{b}": v for (a, b), v in sorted(conf.items())},
        "context_features_example": contexts[:3], "seconds_per_ribbon": t_total / n_ribbons, "load": _load(),
    }
    print("\n== Screening: 'good' against the simulator's truth ==")
    print(f"ribbons {n_ribbons}, sections {out['sections']}: precision {out['precision_good']:.3f} "
          f"(ribbon CI {out['precision_ci95_over_ribbons'][0]:.2f}-{out['precision_ci95_over_ribbons'][1]:.2f}), "
          f"recall {out['recall_good']:.3f} (CI {out['recall_ci95_over_ribbons'][0]:.2f}-{out['recall_ci95_over_ribbons'][1]:.2f})")
    print(f"EM time saved {out['em_time_fraction_saved'] * 100:.0f} % (CI {out['em_time_fraction_saved_ci95'][0] * 100:.0f}-"
          f"{out['em_time_fraction_saved_ci95'][1] * 100:.0f} %), {bad_avoided / 60:.1f} h on bad sections avoided, "
          f"{missed:.0f} good sections missed; {out['seconds_per_ribbon']:.2f} s per ribbon")
    labels = (*SECTION_CLASSES, "missed")
    print(f"{'truth / screened':<16}" + "".join(f"{b:>13}" for b in labels))
    for a in SECTION_CLASSES:
        print(f"{a:<16}" + "".join(f"{conf.get((a, b), 0):>13}" for b in labels))
    return out


# -- 4. env: estimate vs known ----------------------------------------------------------------------
def pooled_env(scenarios: dict) -> dict:
    """Spearman and mean relative bias of estimate vs known over the blocks of every phantom."""
    from scipy.stats import spearmanr

    k = np.array([b["known"]["quality"] for r in scenarios.values() for b in r["blocks"]])
    e = np.array([b["estimate"]["quality"] for r in scenarios.values() for b in r["blocks"]])
    return {"spearman": float(spearmanr(k, e).statistic) if np.ptp(k) > 0 and np.ptp(e) > 0 else math.nan,
            "mean_relative_bias": float((e.mean() - k.mean()) / k.mean()) if k.mean() > 0 else math.nan}


def spearman_ci(known: np.ndarray, estimate: np.ndarray, n: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """95 % bootstrap interval of Spearman's rho over protocols (resamples with a constant side skipped)."""
    from scipy.stats import spearmanr

    k, e = np.asarray(known, float), np.asarray(estimate, float)
    rng = np.random.default_rng(seed)
    rhos = []
    for _ in range(n):
        idx = rng.integers(0, len(k), len(k))
        if np.ptp(k[idx]) > 0 and np.ptp(e[idx]) > 0:
            rhos.append(float(spearmanr(k[idx], e[idx]).statistic))
    return (float(np.percentile(rhos, 2.5)), float(np.percentile(rhos, 97.5))) if rhos else None


def merge_env(previous: dict | None, rerun: dict) -> dict:
    """A rerun of some phantoms (``--phantoms``) merged into the stored env part: its rows replace
    theirs, the other phantoms' rows are kept, and the pooled figures are recomputed from all blocks."""
    if not previous or previous.get("segmenter") != rerun["segmenter"]:
        return rerun
    merged = {**previous, **{k: v for k, v in rerun.items() if k != "scenarios"},
              "scenarios": {**previous.get("scenarios", {}), **rerun["scenarios"]}}
    merged["pooled"] = pooled_env(merged["scenarios"])
    return merged


def bench_env(quick: bool, n_protocols: int, sections: int, segmenter: str, phantoms: tuple[str, ...] = PRESETS,
              seed: int = 5000, protocol_seed: int = 17) -> dict:
    from scipy.stats import qmc, spearmanr

    from cryoopt.loop.blocks import BlockRunner, block_space

    if segmenter != "hierarchical":
        # the env builds its EvaluationContext itself and passes no segmenter yet: give its
        # contexts this one (a benchmark-only shim until the env takes ``segmenter=``)
        import dataclasses

        import cryoopt.envs.clem as clem
        from cryoopt.pipeline import EvaluationContext

        clem.EvaluationContext = lambda **kw: dataclasses.replace(EvaluationContext(**kw), segmenter=segmenter)
    space = block_space()
    protocols = [space.decode(u) for u in qmc.Sobol(space.dim, seed=protocol_seed).random(n_protocols)]
    out: dict = {"protocols": n_protocols, "sections_per_block": sections, "segmenter": segmenter,
                 "seed": seed, "protocol_seed": protocol_seed, "scenarios": {}}
    for scen in phantoms:
        runners = {m: BlockRunner("bo_only", env_kwargs={"scenario": scen, "structures": m, "registration": m, "image_size": 128},
                                  max_sections=sections) for m in ("known", "estimate")}
        logs = {m: _record_terms(r.env.unwrapped) for m, r in runners.items()}
        rows = []
        for i, params in enumerate(protocols):
            row = {"protocol": {k: float(v) if isinstance(v, (int, float)) else v for k, v in params.items()}}
            for m, r in runners.items():
                logs[m].clear()
                t0 = time.perf_counter()
                res = r.measure(params, seed=seed + i)
                row[m] = {"quality": res["quality"], "cnr": res.get("cnr"), "failed_evaluations": res.get("failed_evaluations"),
                          "seconds": time.perf_counter() - t0, **_block_terms(logs[m])}
            rows.append(row)
            print(f"  env {scen:<16} {i:>2}: known {row['known']['quality']:.3f}  estimate {row['estimate']['quality']:.3f}"
                  f"  (logic {_fmt(row['known']['logic'])} / {_fmt(row['estimate']['logic'])}, unmeasured sections "
                  f"{row['known']['no_measurement']} / {row['estimate']['no_measurement']})", flush=True)
        for r in runners.values():
            r.close()
        k = np.array([r["known"]["quality"] for r in rows])
        e = np.array([r["estimate"]["quality"] for r in rows])
        rho = float(spearmanr(k, e).statistic) if np.ptp(k) > 0 and np.ptp(e) > 0 else math.nan
        mk = float(k.mean())
        bias = float((e.mean() - mk) / mk) if mk > 0 else math.nan
        rng = np.random.default_rng(0)
        boots = []
        for _ in range(2000):
            idx = rng.integers(0, len(k), len(k))
            if k[idx].mean() > 0:
                boots.append((e[idx].mean() - k[idx].mean()) / k[idx].mean())
        terms = {}
        for name in ("logic", "impact"):  # paired over the blocks both modes scored
            pairs = np.array([(r["known"][name], r["estimate"][name]) for r in rows
                              if r["known"][name] is not None and r["estimate"][name] is not None]).reshape(-1, 2)
            terms[name] = {"blocks": len(pairs), "known": float(pairs[:, 0].mean()) if len(pairs) else None,
                           "estimate": float(pairs[:, 1].mean()) if len(pairs) else None,
                           "difference_ci95": _boot_ci(pairs[:, 1] - pairs[:, 0]) if len(pairs) > 1 else None}
        terms["no_measurement_sections"] = {m: int(sum(r[m]["no_measurement"] for r in rows)) for m in ("known", "estimate")}
        terms["scored_sections"] = {m: int(sum(r[m]["scored"] for r in rows)) for m in ("known", "estimate")}
        out["scenarios"][scen] = {
            "spearman": rho, "spearman_ci95": spearman_ci(k, e), "mean_relative_bias": bias, "terms": terms,
            "bias_ci95": (float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))) if boots else None,
            "mean_known": mk, "mean_estimate": float(e.mean()),
            "seconds_per_block": {m: float(np.mean([r[m]["seconds"] for r in rows])) for m in ("known", "estimate")},
            "blocks": rows,
        }
    out["pooled"] = pooled_env(out["scenarios"])
    out["load"] = _load()
    print(f"\n== Env block quality, estimate vs known ({n_protocols} Sobol protocols x {len(phantoms)} phantoms, "
          f"{sections} sections per block, paired seeds) ==")
    print(f"{'phantom':<18}{'Spearman':>10}{'rho 95% CI':>16}{'bias':>9}{'bias 95% CI':>20}{'known':>8}{'estim.':>8}{'s/blk known':>12}{'s/blk est.':>11}")
    for scen, r in out["scenarios"].items():
        ci, rci = r["bias_ci95"], r["spearman_ci95"]
        ci_txt = f"[{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "-"
        rci_txt = f"[{rci[0]:.2f}, {rci[1]:.2f}]" if rci else "-"
        print(f"{scen:<18}{r['spearman']:>10.2f}{rci_txt:>16}{r['mean_relative_bias']:>+9.2f}{ci_txt:>20}{r['mean_known']:>8.3f}"
              f"{r['mean_estimate']:>8.3f}{r['seconds_per_block']['known']:>12.1f}{r['seconds_per_block']['estimate']:>11.1f}")
    print(f"{'pooled':<18}{out['pooled']['spearman']:>10.2f}{out['pooled']['mean_relative_bias']:>+9.2f}")
    print("\nreward terms, mean per block over the blocks both modes scored (known / estimate), sections without a measurement:")
    for scen, r in out["scenarios"].items():
        t = r["terms"]
        print(f"{scen:<18}" + "".join(f"  {n} {_fmt(t[n]['known'])} / {_fmt(t[n]['estimate'])}" for n in ("logic", "impact"))
              + f"  unmeasured {t['no_measurement_sections']['known']} / {t['no_measurement_sections']['estimate']}"
              + f" of {sections * len(r['blocks'])}")
    return out


def _record_terms(env) -> list[dict]:
    """Every step's reward terms and flags of ``env`` (its ``step`` wrapped), for the per-term comparison."""
    log: list[dict] = []
    step = env.step

    def recording_step(action):
        obs, reward, terminated, truncated, info = step(action)
        if not info.get("stopped"):
            log.append({"terms": {k: v.get("raw") for k, v in (info.get("reward_terms") or {}).items()},
                        **{k: bool(info.get(k)) for k in ("no_measurement", "evaluation_failed", "section_failed")}})
        return obs, reward, terminated, truncated, info

    env.step = recording_step
    return log


def _block_terms(log: list[dict]) -> dict:
    """A block's mean ``logic`` and ``impact`` over its scored sections, and its section counts."""
    scored = [s for s in log if not (s["no_measurement"] or s["evaluation_failed"] or s["section_failed"])]

    def mean(name: str):
        v = [s["terms"][name] for s in scored if s["terms"].get(name) is not None and math.isfinite(s["terms"][name])]
        return float(np.mean(v)) if v else None

    return {"logic": mean("logic"), "impact": mean("impact"), "scored": len(scored),
            "no_measurement": sum(s["no_measurement"] for s in log)}


def main() -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer sections, pairs, ribbons and protocols (a smoke run)")
    ap.add_argument("--learned", action="store_true", help="also score the learned segmenter (trains at first use)")
    ap.add_argument("--parts", default="seg,reg,screen,env")
    ap.add_argument("--protocols", type=int, default=24)
    ap.add_argument("--sections", type=int, default=6)
    ap.add_argument("--env-segmenter", default="hierarchical", help="the estimate path's EM segmenter in the env part")
    ap.add_argument("--phantoms", default=",".join(PRESETS), help="the env part's phantoms (comma-separated); a rerun of some replaces only their rows in --out")
    ap.add_argument("--reg-seeds", default="300,301,302", help="specimen seeds of the registration part")
    ap.add_argument("--reg-variants", default="similar,compressed,similar+fiducials,compressed+fiducials",
                    help="the registration variants to run (comma-separated)")
    ap.add_argument("--reg-baseline", help="a JSON of the reg part run by other code on the same seeds: paired differences per section")
    ap.add_argument("--reg-key", default="registration", help="the key of --out the reg part is stored under")
    ap.add_argument("--out", default=str(HERE / "results" / "estimate.json"))
    ap.add_argument("--seg-seeds", default="200,201,202,203",
                    help="specimen seeds of the seg part (held out: 200+; tune on others, e.g. 300,301)")
    ap.add_argument("--seg-baseline", help="a JSON of an earlier seg run (e.g. the previous segmenter's) to pair against")
    ap.add_argument("--env-seed", type=int, default=5000,
                    help="the env part's first specimen seed (block i uses seed + i; the stored runs use 5000)")
    ap.add_argument("--env-protocol-seed", type=int, default=17,
                    help="seed of the env part's Sobol protocols (the stored runs use 17; others give fresh protocols)")
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    parts = set(args.parts.split(","))
    result: dict = {"machine": platform.platform(), "threads": os.environ.get("OMP_NUM_THREADS", "default"),
                    "load_at_start": _load(), "quick": args.quick}
    t0 = time.perf_counter()
    if "seg" in parts:
        result["segmentation"] = bench_segmentation(args.quick, args.learned, tuple(int(x) for x in args.seg_seeds.split(",")))
        if args.seg_baseline:
            result["segmentation"]["paired_vs_baseline"] = paired_segmentation(
                result["segmentation"], json.loads(Path(args.seg_baseline).read_text())["segmentation"])
    if "reg" in parts:
        result[args.reg_key] = bench_registration(args.quick, tuple(int(x) for x in args.reg_seeds.split(",")),
                                                 tuple(args.reg_variants.split(",")))
        if args.reg_baseline:
            base = json.loads(Path(args.reg_baseline).read_text())
            base = base.get(args.reg_key, base.get("registration", {}))
            result[args.reg_key]["paired_vs_baseline"] = paired = paired_registration(result[args.reg_key], base)
            print("\n== Registration, paired with the baseline on the same sections (this minus baseline, 95 % CI) ==")
            for variant, r in paired.items():
                if isinstance(r, str):
                    print(f"{variant:<22}{r}")
                    continue
                print(f"{variant:<22}< 1 px {r['baseline_below_1_px']:.2f} -> {r['below_1_px']:.2f}: {r['diff_below_1_px']:+.3f} "
                      f"({r['diff_below_1_px_ci95'][0]:+.3f}, {r['diff_below_1_px_ci95'][1]:+.3f}); wrong {r['baseline_wrong']} -> {r['wrong']}; "
                      f"refused {r['baseline_refused']} -> {r['refused']}")
    if "screen" in parts:
        result["screening"] = bench_screening(args.quick)
    if "env" in parts:
        key = "env" if args.env_segmenter == "hierarchical" else f"env_{args.env_segmenter}"
        result[key] = bench_env(args.quick, 8 if args.quick else args.protocols, 3 if args.quick else args.sections,
                                args.env_segmenter, tuple(args.phantoms.split(",")), args.env_seed, args.env_protocol_seed)
    result["seconds_total"] = time.perf_counter() - t0
    result["load_at_end"] = _load()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(path.read_text()) if path.exists() else {}
    for key in [k for k in result if k.startswith("env")]:  # a rerun of some phantoms keeps the others' rows
        result[key] = merge_env(previous.get(key), result[key])
    previous.update({k: v for k, v in result.items()})  # a partial run keeps the other parts
    path.write_text(json.dumps(previous, indent=2, default=float))
    print(f"\nwrote {path} ({result['seconds_total'] / 60:.1f} min, load {result['load_at_start']:.1f} -> {result['load_at_end']:.1f})")
    return result


if __name__ == "__main__":
    main()
