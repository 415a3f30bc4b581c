"""Stage 4, LM-EM registration: map light-microscope pixels onto the electron image.

Works from the images alone: pixel sizes, when known, fix the scale; when they are
not, rotation, scale and shift are all estimated, and a registration that cannot be
verified is refused (:class:`~cryoopt.exceptions.RegistrationError`) rather than
returned wrong. Method (all image steps from :mod:`skimage`):

1. Both images are reduced to a common working grid (EM block-averaged to at most
   ``max_working_px``; LM rescaled by the known pixel-size ratio, or to the EM grid's
   size) and turned into contrast-sign-independent feature images (gradient magnitude
   of a Gaussian of at least 2 working pixels: finer scales carry noise, not
   structure), because LM and EM show the same structures with different, even
   inverted, contrast.
2. Coarse hypotheses, each a similarity transform:

   * Fourier-Mellin: rotation and scale from the log-polar transform of the Fourier
     magnitudes (Reddy & Chatterji 1996, IEEE TIP 5:1266;
     :func:`skimage.transform.warp_polar` +
     :func:`skimage.registration.phase_cross_correlation`), the 180 degree ambiguity
     resolved by the stronger translation peak (Guizar-Sicairos et al. 2008, Opt.
     Lett. 33:156). Needs fields that mostly overlap.
   * Point patterns: structure centroids in both images (the minority Otsu phase of
     each, or the caller's points, e.g. segmented mitochondria and LM label spots)
     matched by similarity-invariant triangles of nearest neighbours (the ratios of
     sorted side lengths; Groth 1986, AJ 91:1244, as in astronomical plate matching),
     each matched triangle giving a similarity (:class:`skimage.transform.SimilarityTransform`).
     Works when one field is a small part of the other and at any scale.

   The hypothesis that maps the most structure centroids onto each other (mutual
   nearest neighbours within ``match_radius_px``) wins.

   Fiducial beads on their own: where both images show a group of compact objects alike in
   contrast and area (:func:`points._alike_objects`; beads are identical objects, one size and one
   material, among structures of every size and contrast), re-detected at their size
   (:func:`points._bead_points`), the point patterns are searched among them alone where the
   structures (beads included) do not verify a transform. Among crowded structures (a
   nucleus's chromatin clumps, the LM's label puncta) a right transform through the beads
   had matched its 14 beads no better than chance matched the crowd (p = 1); among the
   beads alone, the same matches are far beyond chance. The groups are chosen from each
   image alone, so the chance test's null holds for them, and every transform tried so far
   is counted in it (the structures' search first, the beads' then with both counts: the
   chance of a wrong acceptance is at most ``max_p_value`` for each, below twice it in all).
3. Verification: at least ``min_matches`` matched structures, else the registration
   is refused. Without structure points, the Fourier-Mellin result must stand out of
   the feature correlations of shifted copies by ``min_peak_z`` sigmas.
4. Refinement: an affine (or similarity) transform fitted with RANSAC
   (:func:`skimage.measure.ransac`) then least squares on the matched centroids; a
   similarity replaces the affine where it predicts the held-out matches clearly better
   (leave-one-out, :data:`lm_em.SIMILARITY_PREFERENCE`): an affine on four or five matches
   follows their noise. Then precision: the refined transform must put more structures
   onto each other within their localisation precision (:data:`hypotheses.VERIFY_RADIUS_PX`) than
   the parameters it fitted absorb, beyond chance as in step 3, or the registration is
   refused. Step 3 accepts matches at the wider match radius, so a transform a few pixels
   off (some of its few matches wrong or merged structures) passed it. On a section that
   may have compressed (``max_compression > 0``) an affine through a few matches is right at
   them and extrapolates a uniform compression beyond them, where a cut compresses unevenly:
   fewer matches within that precision than the simplest uneven compression (varying
   linearly across the cut) needs to be fitted and judged
   (:meth:`cut_model._CompressionFit.min_matches`, 10) are refused. With ``elastic=True`` the matches
   within that precision are also counted under the cut's model grown from the hypothesis's
   matches (:func:`cut_model._cut_model_matches`), every parameter it fitted taken as a match it
   absorbed in the chance test: an unevenly compressed section leaves any affine pixels off
   over much of the field, so a right transform was refused for the few structures an affine
   puts within a pixel or two there. A registration verified only so must then keep a
   non-rigid model (step 5), else it is refused.
5. Non-rigid (``elastic=True``), for sections that deformed between the two images
   (compression along the cut, drying). An affine already covers a uniform compression
   exactly (anisotropic scale and shear); what is left is compression that varies
   across the section. First from the structures: the matches are re-collected under the
   affine (a wide radius, then at localisation precision) and the affine refitted on all
   of them; matches the cut's model, fitted without them, misses by more than four
   times the median (two beads merged in one LM spot, a structure matched to its
   neighbour) are dropped, at most a fifth; then candidate models are fitted to the same
   matches and judged by their
   leave-one-out errors (closed form ``r_i / (1 - h_ii)`` for the linear ones):
   the cut's own model (a shift along the compression direction proportional to the
   distance along it, varying smoothly across it, as penalised cubic B-splines:
   :class:`cut_model._CompressionFit`), polynomials
   of order 2 and 3, and a smoothing thin-plate spline
   (:class:`scipy.interpolate.RBFInterpolator`). A model is kept only where it predicts
   held-out structures better than the affine by a tenth, which needs many matches
   (fiducials); the cut's model is preferred when within a tenth of the best, as it alone
   extrapolates beyond the matched structures as a compression does. Then from the
   images: TV-L1 optical flow (:func:`skimage.registration.optical_flow_tvl1`; Zach, Pock
   & Bischof 2007, DAGM) between the EM structure image and the LM warped by the model so
   far, smoothed by normalised convolution where there is structure to see, kept only
   where it brings the matched structures (which it never saw) closer by a tenth.

Target registration error: for a least-squares fit, each output coordinate is a
linear regression on ``[x, y, 1]``, so the expected squared TRE at a point ``r`` is
``2 sigma^2 h(r)`` with ``h(r) = r^T (X^T X)^-1 r`` and ``sigma^2 = RSS / (2N - p)``
(Fitzpatrick, West & Maurer 1998, IEEE TMI 17:694, for the rigid analogue); it is the
error of the fitted model where the model is right, and says nothing of a model that
cannot follow the deformation (an affine on a non-uniformly compressed section) or that
extrapolates away from the matched structures. :meth:`RegistrationResult.tre_at` adds to
the fitted model's own variance at the point (its design's leverage there, for every model
kept) the model's inadequacy measured by spatial cross-validation of the matches, which
grows with the distance from them (:class:`tre._TREEstimate`). ``tre_px`` is that estimate's
RMS over the EM field, for every model (:func:`target_registration_error` keeps the
least-squares figure alone).

Coordinates follow skimage: ``(x, y) = (column, row)``; ``transform`` maps LM pixel
coordinates to EM pixel coordinates.

Modules, one job each (each imports only modules listed before it):

* :mod:`.hypotheses`: triangle hypotheses, point-pattern matching, fits on matches, the chance test.
* :mod:`.images`: feature images, Fourier-Mellin rotation and scale, cross-correlation checks.
* :mod:`.points`: structure, compact-object and bead points.
* :mod:`.cut_model`: the cut's compression model, polynomials and splines fitted to matches.
* :mod:`.tre`: the target registration error estimate (spatial cross-validation).
* :mod:`.result`: :class:`RegistrationResult` and the least-squares TRE.
* :mod:`.nonrigid`: step 5, the non-rigid model choice and the elastic (optical-flow) step.
* :mod:`.block_path`: the block-by-block hypotheses of :func:`register_lm_em`.
* :mod:`.lm_em`: :func:`register_lm_em`, steps 1-5.
* :mod:`.prior`: :func:`register_near_prior`, registration near a stage prior.
"""

from __future__ import annotations

from cryoopt.exceptions import RegistrationError
from cryoopt.pipeline.registration.cut_model import CUT_MAX_PIECES, CUT_ROUGHNESS, SPLINE_SMOOTHING
from cryoopt.pipeline.registration.hypotheses import (
    LOCAL_DENSITY_K,
    VERIFY_RADIUS_PX,
    match_point_patterns,
    triangle_hypotheses,
)
from cryoopt.pipeline.registration.images import MIN_FEATURE_SIGMA_PX
from cryoopt.pipeline.registration.lm_em import SIMILARITY_PREFERENCE, register_lm_em
from cryoopt.pipeline.registration.points import (
    ALIKE_FACTOR,
    BEAD_TOPHAT_DIAMETERS,
    BEAD_Z,
    MIN_ALIKE_OBJECTS,
    detect_compact_objects,
    detect_structure_points,
)
from cryoopt.pipeline.registration.prior import MIN_TOROIDAL_SHIFT_PX, STAGE_RELOCATION_SIGMA_NM, register_near_prior
from cryoopt.pipeline.registration.result import RegistrationResult, target_registration_error
from cryoopt.pipeline.registration.tre import TRE_CV_DIRECTIONS, TRE_CV_MAX_BLOCKS, TRE_CV_OUTER_FRACTION, TRE_GROWTH_Z

__all__ = [
    "RegistrationError",
    "RegistrationResult",
    "detect_compact_objects",
    "detect_structure_points",
    "match_point_patterns",
    "register_lm_em",
    "register_near_prior",
    "target_registration_error",
]
