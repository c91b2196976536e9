"""Per-patient tumor shape features from a 3D binary mask.

The three radiogenomic features follow Czarnek et al., "Algorithmic three-dimensional analysis of
tumor shape in MRI improves prognosis of survival in glioblastoma", J Neurooncol 132 (2017) 55-62,
and Mazurowski et al., "Radiogenomics of lower-grade glioma: algorithmically-assessed tumor shape is
associated with tumor genomic subtypes and patient outcomes in a multi-institutional study with The
Cancer Genome Atlas data", J Neurooncol 133 (2017) 27-35, as used by Buda, Saha & Mazurowski,
Comput Biol Med 109 (2019) 218-225 (arXiv:1906.03720). The papers give the ideas, not every
constant; the choices made here are stated next to each function and in ``docs/radiogenomics.md``.

Conventions
-----------
* A mask is ``(Z, H, W)`` bool (slice, row, column), as in the data set.
* ``spacing`` is ``(z, y, x)`` in millimetres. Without it every voxel is a unit cube: volume in mL
  is NaN and lengths/areas are in voxel units. Wherever geometry matters (BEVR, solidity,
  elongation, surface area, the 2D radial distances) physical coordinates are used.
* The voxelised tumor is treated as a union of closed unit cubes: voxel ``(z, y, x)`` occupies
  ``[z, z+1] x [y, y+1] x [x, x+1]`` (times the spacing).
* All components of the mask count for the 3D features (volume, surface, BEVR, solidity,
  sphericity, elongation). The 2D features (MF, ASD) use the largest 8-connected component of the
  slice with the largest tumor area (lowest slice index on ties), with its holes filled.
* An empty mask gives ``volume_voxels = 0`` (``volume_ml = 0`` when the spacing is known) and NaN
  for every other feature; MF and ASD are NaN when the largest slice's region is too small to
  have a boundary (fewer than 3 boundary pixels or zero mean radius).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence, Union

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull

FEATURE_COLUMNS: tuple[str, ...] = (
    "patient",
    "volume_voxels",
    "volume_ml",
    "surface_area",
    "bevr",
    "margin_fluctuation",
    "angular_sd",
    "sphericity",
    "solidity",
    "elongation",
)
"""Column order of ``features.csv``."""

NUMERIC_FEATURES: tuple[str, ...] = FEATURE_COLUMNS[1:]
PAPER_FEATURES: tuple[str, ...] = ("bevr", "margin_fluctuation", "angular_sd")
"""The three features of Buda et al. 2019."""

MVEE_TOLERANCE = 1e-4
"""Khachiyan stops when ``max_i M_i <= (1 + tol)(d + 1)``: the ellipsoid is then within a factor
``(1 + tol)^((d+1)/2)`` (< 0.02 % for d = 3) of the minimum volume before the final exact rescale."""
MVEE_MAX_ITERATIONS = 100_000
MF_WINDOW_FRACTION = 0.05
"""Moving-average window for MF: 5 % of the boundary length (odd, at least 3 samples)."""
ASD_BINS = 36
"""ASD uses 36 angular bins of 10 degrees around the centroid."""


Spacing = Union[Sequence[float], np.ndarray]
"""Voxel size in mm: ``(z, y, x)`` for 3D functions, ``(y, x)`` for the 2D ones; a sequence or array."""


@dataclass(frozen=True)
class ShapeFeatures:
    """One patient's shape features; ``as_row()`` gives the ``features.csv`` row."""

    patient: str
    volume_voxels: int
    volume_ml: float
    surface_area: float
    bevr: float
    margin_fluctuation: float
    angular_sd: float
    sphericity: float
    solidity: float
    elongation: float

    def as_row(self) -> dict[str, object]:
        return asdict(self)


def _spacing3(spacing: Spacing | None) -> np.ndarray:
    if spacing is None:
        return np.ones(3)
    out = np.asarray(spacing, dtype=float)
    if out.shape != (3,) or not np.all(np.isfinite(out)) or np.any(out <= 0):
        raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {spacing!r}")
    return out


def surface_area(mask: np.ndarray, spacing: Spacing | None = None) -> float:
    """Total area of the exposed voxel faces of a ``(Z, H, W)`` bool mask.

    Each face between a tumor voxel and a non-tumor voxel (or the volume's edge) counts with its
    physical area (``sy*sx`` for faces normal to z, and so on). This over-estimates the area of a
    smooth surface (by 3/2 on average for isotropic orientations) but keeps sphericity <= 1 by the
    isoperimetric inequality.
    """
    s = _spacing3(spacing)
    padded = np.pad(np.asarray(mask, bool), 1)
    face = (s[1] * s[2], s[0] * s[2], s[0] * s[1])
    return float(sum(np.count_nonzero(np.diff(padded, axis=a)) * face[a] for a in range(3)))


def _hull_corner_points(mask: np.ndarray, spacing: np.ndarray) -> np.ndarray:
    """Corners that span the convex hull of the union of voxel cubes: ``(N, 3)`` physical (z, y, x).

    For every (z, y) row only its first and last tumor voxel along x can be extreme, so 8 corners
    per row suffice.
    """
    rows = mask.any(axis=2)
    z, y = np.nonzero(rows)
    x_first = mask[z, y].argmax(axis=1)
    x_last = mask.shape[2] - 1 - mask[z, y][:, ::-1].argmax(axis=1)
    points = []
    for dz in (0, 1):
        for dy in (0, 1):
            points.append(np.stack([z + dz, y + dy, x_first], axis=1))
            points.append(np.stack([z + dz, y + dy, x_last + 1], axis=1))
    return np.unique(np.concatenate(points), axis=0).astype(float) * spacing


def minimum_volume_ellipsoid(points: np.ndarray, tol: float = MVEE_TOLERANCE) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-volume enclosing ellipsoid of ``(N, d)`` points by Khachiyan's algorithm.

    Khachiyan's barycentric coordinate ascent, with the away steps of Todd & Yildirim (2007) that
    make it converge in about a thousand iterations instead of tens of thousands.

    Returns ``(A, c)``: the ellipsoid is ``{x : (x - c)^T A (x - c) <= 1}``, ``A`` is ``(d, d)``
    and ``c`` is ``(d,)``. After the iteration stops (see :data:`MVEE_TOLERANCE`), ``A`` is rescaled
    so that the farthest point lies exactly on the surface: every point is inside, always.
    """
    pts = np.asarray(points, dtype=float)
    n, d = pts.shape
    shift = pts.mean(axis=0)
    scale = float(np.abs(pts - shift).max()) or 1.0
    p = (pts - shift) / scale
    q = np.vstack([p.T, np.ones(n)])  # (d+1, n)
    u = np.full(n, 1.0 / n)
    for _ in range(MVEE_MAX_ITERATIONS):
        x = (q * u) @ q.T
        m = np.einsum("ij,ij->j", q, np.linalg.solve(x, q))
        j = int(np.argmax(m))
        if m[j] <= (1.0 + tol) * (d + 1):
            break
        k = int(np.argmin(np.where(u > 0, m, np.inf)))
        if (d + 1) - m[k] > m[j] - (d + 1):  # Todd-Yildirim away step: shrink the weakest support point
            j = k
        step = (m[j] - d - 1.0) / ((d + 1.0) * (m[j] - 1.0))
        if j == k:
            step = max(step, -u[k] / (1.0 - u[k]))
        u *= 1.0 - step
        u[j] = max(u[j] + step, 0.0)
    center = p.T @ u
    cov = (p.T * u) @ p - np.outer(center, center)
    a = np.linalg.inv(cov) / d
    diff = p - center
    a /= float(np.einsum("ij,jk,ik->i", diff, a, diff).max())
    return a / scale**2, center * scale + shift


def _ellipsoid_volume(a: np.ndarray) -> float:
    d = a.shape[0]
    unit_ball = math.pi ** (d / 2) / math.gamma(d / 2 + 1)
    return float(unit_ball / math.sqrt(np.linalg.det(a)))


def bevr_solidity(mask: np.ndarray, spacing: Spacing | None = None) -> tuple[float, float]:
    """Bounding ellipsoid volume ratio and solidity of a non-empty ``(Z, H, W)`` bool mask.

    BEVR (Czarnek et al. 2017): tumor volume / volume of the minimum-volume ellipsoid that encloses
    the tumor. Here the ellipsoid encloses every voxel cube (Khachiyan's algorithm on the vertices
    of the convex hull of the voxel corners), so BEVR is in (0, 1]: an axis-aligned voxel cube gives
    2 / (pi sqrt 3) = 0.3676. Solidity: tumor volume / volume of that convex hull, in (0, 1].
    """
    s = _spacing3(spacing)
    mask = np.asarray(mask, bool)
    volume = float(mask.sum()) * float(np.prod(s))
    corners = _hull_corner_points(mask, s)
    hull = ConvexHull(corners)
    a, _ = minimum_volume_ellipsoid(corners[hull.vertices])
    return volume / _ellipsoid_volume(a), volume / float(hull.volume)


def elongation(mask: np.ndarray, spacing: Spacing | None = None) -> float:
    """``sqrt(lambda2 / lambda1)`` of the covariance of the voxelised solid (1 = no main axis).

    The covariance is that of the voxel centres in physical coordinates plus ``s_i^2 / 12`` per
    axis (the spread inside one voxel), i.e. the exact second moments of the union of cubes.
    ``lambda1 >= lambda2`` are its two largest eigenvalues; a long thin tumor tends to 0.
    """
    s = _spacing3(spacing)
    coords = np.argwhere(np.asarray(mask, bool)).astype(float) * s
    cov = np.cov(coords, rowvar=False, bias=True) if len(coords) > 1 else np.zeros((3, 3))
    eig = np.sort(np.linalg.eigvalsh(cov + np.diag(s**2 / 12.0)))[::-1]
    return float(math.sqrt(max(eig[1], 0.0) / eig[0]))


def largest_slice_region(mask: np.ndarray) -> np.ndarray | None:
    """The ``(H, W)`` region used for MF and ASD, or None for an empty mask.

    Slice with the largest tumor area (lowest index on ties); its largest 8-connected component
    (first label on ties); holes filled.
    """
    mask = np.asarray(mask, bool)
    areas = mask.reshape(len(mask), -1).sum(axis=1)
    if areas.max(initial=0) == 0:
        return None
    sl = mask[int(np.argmax(areas))]
    labels, count = ndimage.label(sl, structure=np.ones((3, 3), bool))
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:]
        sl = labels == int(np.argmax(sizes)) + 1
    return ndimage.binary_fill_holes(sl)


_RING = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))
"""8 neighbours clockwise on screen (rows grow downwards), starting west."""


def trace_boundary(region: np.ndarray) -> np.ndarray:
    """Ordered outer boundary of one 8-connected ``(H, W)`` bool region: ``(N, 2)`` (row, col).

    Moore-neighbour tracing, starting at the first pixel in raster order and stopping by Jacob's
    criterion (the first move repeats). Pixels on thin parts may appear more than once.
    """
    pad = np.pad(np.asarray(region, bool), 1)
    rows, cols = np.nonzero(pad)
    if len(rows) == 0:
        return np.zeros((0, 2), int)
    start = (int(rows[0]), int(cols[0]))  # np.nonzero is in raster order
    p, b = start, (start[0], start[1] - 1)
    chain = [start]
    first_move: tuple[tuple[int, int], tuple[int, int]] | None = None
    for _ in range(4 * len(rows) + 8):
        s = _RING.index((b[0] - p[0], b[1] - p[1]))
        prev, nxt = b, None
        for k in range(1, 9):
            dr, dc = _RING[(s + k) % 8]
            cand = (p[0] + dr, p[1] + dc)
            if pad[cand]:
                nxt = cand
                break
            prev = cand
        if nxt is None:  # a single pixel
            break
        if first_move is None:
            first_move = (p, nxt)
        elif (p, nxt) == first_move:
            chain.pop()  # the start pixel was appended again on arrival
            break
        chain.append(nxt)
        p, b = nxt, prev
    return np.asarray(chain, int) - 1


def _radial_profile(region: np.ndarray, spacing_yx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Radial distances (physical) and angles of the ordered boundary around the region centroid."""
    boundary = trace_boundary(region)
    if len(boundary) < 3:
        return None
    centroid = np.argwhere(region).mean(axis=0)
    delta = (boundary - centroid) * spacing_yx
    radius = np.hypot(delta[:, 0], delta[:, 1])
    if radius.mean() <= 0:
        return None
    return radius, np.arctan2(delta[:, 0], delta[:, 1])


def margin_fluctuation(region: np.ndarray, spacing_yx: Spacing = (1.0, 1.0)) -> float:
    """MF of a 2D ``(H, W)`` region (Czarnek et al. 2017; Buda et al. 2019).

    The radial distance from the centroid to each ordered boundary pixel is smoothed with a
    circular moving average of :data:`MF_WINDOW_FRACTION` of the boundary length (odd, >= 3);
    MF = std(raw - smoothed) / mean(raw), so it does not depend on the tumor's size.
    """
    profile = _radial_profile(np.asarray(region, bool), np.asarray(spacing_yx, float))
    if profile is None:
        return math.nan
    radius = profile[0]
    n = len(radius)
    half = max(1, int(round(n * MF_WINDOW_FRACTION / 2)))
    half = min(half, (n - 1) // 2)
    window = 2 * half + 1
    padded = np.take(radius, np.arange(-half, n + half), mode="wrap")
    csum = np.concatenate([[0.0], np.cumsum(padded)])
    smooth = (csum[window:] - csum[:-window]) / window
    return float(np.std(radius - smooth) / radius.mean())


def angular_sd(region: np.ndarray, spacing_yx: Spacing = (1.0, 1.0), bins: int = ASD_BINS) -> float:
    """ASD of a 2D ``(H, W)`` region (Czarnek et al. 2017; Buda et al. 2019).

    Boundary pixels are binned by their angle around the centroid into ``bins`` equal sectors;
    in every sector holding at least two pixels the standard deviation of their radial distances
    is taken; ASD = mean of those standard deviations / mean radial distance (scale-free).
    """
    profile = _radial_profile(np.asarray(region, bool), np.asarray(spacing_yx, float))
    if profile is None:
        return math.nan
    radius, angle = profile
    index = np.clip(((angle + math.pi) / (2 * math.pi) * bins).astype(int), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    total = np.bincount(index, radius, minlength=bins)
    squares = np.bincount(index, radius**2, minlength=bins)
    used = count >= 2
    if not used.any():
        return math.nan
    mean = total[used] / count[used]
    std = np.sqrt(np.clip(squares[used] / count[used] - mean**2, 0.0, None))
    return float(std.mean() / radius.mean())


def shape_features(patient: str, mask: np.ndarray, spacing: Spacing | None = None) -> ShapeFeatures:
    """All features of one patient's ``(Z, H, W)`` bool mask (see the module docstring)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be (Z, H, W), got shape {mask.shape}")
    s = _spacing3(spacing)
    count = int(mask.sum())
    volume_ml = count * float(np.prod(s)) / 1000.0 if spacing is not None else math.nan
    nan = math.nan
    if count == 0:
        return ShapeFeatures(patient, 0, volume_ml, nan, nan, nan, nan, nan, nan, nan)
    volume = count * float(np.prod(s))
    area = surface_area(mask, s)
    bevr, solidity = bevr_solidity(mask, s)
    region = largest_slice_region(mask)
    assert region is not None
    return ShapeFeatures(
        patient=patient,
        volume_voxels=count,
        volume_ml=volume_ml,
        surface_area=area,
        bevr=bevr,
        margin_fluctuation=margin_fluctuation(region, s[1:]),
        angular_sd=angular_sd(region, s[1:]),
        sphericity=math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area,
        solidity=solidity,
        elongation=elongation(mask, s),
    )
