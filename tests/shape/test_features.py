"""Shape features on synthetic shapes with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from lggseg.shape.features import (
    FEATURE_COLUMNS,
    PAPER_FEATURES,
    angular_sd,
    bevr_solidity,
    largest_slice_region,
    margin_fluctuation,
    minimum_volume_ellipsoid,
    shape_features,
    surface_area,
    trace_boundary,
)

CUBE_IN_ELLIPSOID = 2 / (math.pi * math.sqrt(3))  # box volume / volume of its minimum ellipsoid = 0.3676


def ellipsoid(semi_axes: tuple[float, float, float], margin: int = 3) -> np.ndarray:
    """Voxelised ``(Z, H, W)`` ellipsoid with semi-axes (z, y, x) in voxels, centred on a voxel."""
    half = [int(math.ceil(a)) + margin for a in semi_axes]
    z, y, x = np.ogrid[-half[0] : half[0] + 1, -half[1] : half[1] + 1, -half[2] : half[2] + 1]
    return (z / semi_axes[0]) ** 2 + (y / semi_axes[1]) ** 2 + (x / semi_axes[2]) ** 2 <= 1


def disc_and_star(size: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A smooth disc and a 12-pointed star polygon of similar area, ``(H, W)`` bool each."""
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    rho, theta = np.hypot(yy, xx), np.arctan2(yy, xx)
    disc = rho <= 40
    points = 12
    sector = (theta % (2 * math.pi / points)) / (2 * math.pi / points)  # 0..1 across one spike
    star = rho <= 32 + 26 * np.abs(1 - 2 * sector)  # radius zig-zags 58 (tips) .. 32 (notches)
    return disc, star


def blobs(seed: int, shape: tuple[int, int, int] = (12, 48, 48)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2.0) > 0.52


@pytest.mark.parametrize(("semi_axes", "lower"), [((8, 12, 20), 0.80), ((16, 24, 40), 0.89)])
def test_voxelised_ellipsoid_bevr_is_near_one(semi_axes: tuple[float, float, float], lower: float) -> None:
    # The ellipsoid encloses whole voxel cubes, so voxelisation costs ~0.7 voxel per semi-axis:
    # observed 0.812 for (8, 12, 20) and 0.897 for (16, 24, 40).
    bevr, solidity = bevr_solidity(ellipsoid(semi_axes))
    assert lower <= bevr <= 1.0
    assert 0.85 <= solidity <= 1.0


@pytest.mark.parametrize("box", [(8, 8, 8), (4, 10, 6), (1, 1, 1)])
def test_box_bevr_is_the_analytic_value(box: tuple[int, int, int]) -> None:
    mask = np.zeros(tuple(b + 4 for b in box), bool)
    mask[2 : 2 + box[0], 2 : 2 + box[1], 2 : 2 + box[2]] = True
    bevr, solidity = bevr_solidity(mask)
    assert bevr == pytest.approx(CUBE_IN_ELLIPSOID, rel=1e-3)
    assert solidity == pytest.approx(1.0, abs=1e-12)
    anisotropic, _ = bevr_solidity(mask, spacing=(3.0, 0.5, 0.7))  # still a box in mm
    assert anisotropic == pytest.approx(CUBE_IN_ELLIPSOID, rel=1e-3)


def test_mvee_recovers_a_known_ellipse_and_contains_every_point() -> None:
    t = np.linspace(0, 2 * math.pi, 200, endpoint=False)
    points = np.stack([5 + 3 * np.cos(t), -2 + np.sin(t)], axis=1)
    a, c = minimum_volume_ellipsoid(points)
    np.testing.assert_allclose(c, [5, -2], atol=1e-3)
    np.testing.assert_allclose(a, np.diag([1 / 9, 1.0]), atol=2e-3)
    cloud = np.random.default_rng(3).normal(size=(300, 3)) * [1, 4, 9]
    a, c = minimum_volume_ellipsoid(cloud)
    inside = np.einsum("ij,jk,ik->i", cloud - c, a, cloud - c)
    assert inside.max() == pytest.approx(1.0, abs=1e-9)


def test_disc_has_lower_mf_and_asd_than_a_star() -> None:
    disc, star = disc_and_star()
    assert 0.8 < star.sum() / disc.sum() < 1.6
    assert margin_fluctuation(disc) < margin_fluctuation(star) / 3
    assert angular_sd(disc) < angular_sd(star) / 3
    assert margin_fluctuation(disc) < 0.02 and angular_sd(disc) < 0.02


def test_features_are_invariant_to_translation() -> None:
    mask = blobs(1)
    moved = np.zeros((20, 70, 64), bool)
    moved[5:17, 13:61, 9:57] = mask
    a, b = shape_features("p", mask).as_row(), shape_features("p", moved).as_row()
    for column in FEATURE_COLUMNS[1:]:
        assert a[column] == pytest.approx(b[column], rel=1e-9, abs=1e-12, nan_ok=True), column


def test_volume_and_bevr_are_invariant_to_a_90_degree_rotation() -> None:
    mask = blobs(2)
    rotated = np.rot90(mask, k=1, axes=(1, 2))
    a, b = shape_features("p", mask), shape_features("p", rotated)
    assert a.volume_voxels == b.volume_voxels
    assert a.surface_area == b.surface_area
    assert a.bevr == pytest.approx(b.bevr, rel=1e-4)
    assert a.solidity == pytest.approx(b.solidity, rel=1e-9)
    assert a.elongation == pytest.approx(b.elongation, rel=1e-9)


def test_spacing_scales_volume_and_area() -> None:
    mask = blobs(3)
    one = shape_features("p", mask, spacing=(1.0, 0.5, 0.5))
    two = shape_features("p", mask, spacing=(2.0, 0.5, 0.5))
    assert one.volume_ml == pytest.approx(mask.sum() * 0.25 / 1000)
    assert two.volume_ml == pytest.approx(2 * one.volume_ml)
    assert math.isnan(shape_features("p", mask).volume_ml)  # unknown spacing: no mL
    box = np.zeros((5, 6, 7), bool)
    box[1:4, 1:5, 1:6] = True  # 3 x 4 x 5 voxels
    sz, sy, sx = 2.0, 0.5, 0.25
    expected = 2 * (3 * sz * 4 * sy + 3 * sz * 5 * sx + 4 * sy * 5 * sx)
    assert surface_area(box, (sz, sy, sx)) == pytest.approx(expected)


def test_sphericity_and_elongation_of_simple_solids() -> None:
    ball = shape_features("b", ellipsoid((15, 15, 15)))
    assert 0.6 < ball.sphericity <= 1.0  # voxel faces over-estimate a smooth surface (3/2 on average)
    assert ball.elongation == pytest.approx(1.0, abs=1e-6)
    rod = np.zeros((4, 4, 44), bool)
    rod[1:3, 1:3, 2:42] = True
    assert shape_features("r", rod).elongation < 0.1


def test_empty_and_tiny_masks_do_not_crash() -> None:
    empty = shape_features("e", np.zeros((3, 8, 8), bool))
    assert empty.volume_voxels == 0
    for column in ("surface_area", *PAPER_FEATURES, "sphericity", "solidity", "elongation"):
        assert math.isnan(getattr(empty, column)), column
    assert shape_features("e", np.zeros((3, 8, 8), bool), spacing=(1, 1, 1)).volume_ml == 0.0
    dot = np.zeros((3, 8, 8), bool)
    dot[1, 4, 4] = True
    single = shape_features("d", dot)
    assert single.volume_voxels == 1
    assert single.bevr == pytest.approx(CUBE_IN_ELLIPSOID, rel=1e-3)
    assert math.isnan(single.margin_fluctuation) and math.isnan(single.angular_sd)
    with pytest.raises(ValueError):
        shape_features("x", np.zeros((8, 8), bool))


def test_all_components_count_in_3d_but_2d_features_use_the_largest_component() -> None:
    mask = np.zeros((4, 40, 40), bool)
    mask[1, 5:25, 5:25] = True  # 400 px on slice 1
    mask[1, 30:34, 30:34] = True  # a second, small component on the same slice
    mask[2, 5:15, 5:15] = True
    assert shape_features("m", mask).volume_voxels == 400 + 16 + 100
    region = largest_slice_region(mask)
    assert region is not None and region.sum() == 400


def test_boundary_trace_visits_exactly_the_edge_pixels_in_order() -> None:
    rng = np.random.default_rng(4)
    four = ndimage.generate_binary_structure(2, 1)
    for _ in range(40):
        image = ndimage.gaussian_filter(rng.random((36, 36)), rng.uniform(0.8, 3)) > rng.uniform(0.45, 0.55)
        region = largest_slice_region(image[None])
        if region is None:
            continue
        chain = trace_boundary(region)
        edge = region & ~ndimage.binary_erosion(np.pad(region, 1), structure=four)[1:-1, 1:-1]
        assert set(map(tuple, chain)) == set(map(tuple, np.argwhere(edge)))
        if len(chain) > 1:
            steps = np.abs(np.diff(np.vstack([chain, chain[:1]]), axis=0)).max(axis=1)
            assert steps.max() == 1  # a closed 8-connected loop
