"""The geometry record: voxel positions in LPS, the affines, regular stacks, JSON round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import oblique_geometry

from bundle.geometry import LPS_TO_RAS, ScanGeometry, SliceGeometry


def _all_voxels(geometry: ScanGeometry):
    nx, ny = geometry.matrix
    return [(i, j, k) for i in range(nx) for j in range(ny) for k in range(geometry.nz)]


@pytest.mark.parametrize("left_handed", [False, True])
def test_affine_places_every_voxel_where_voxel_lps_says(left_handed):
    g = oblique_geometry(left_handed=left_handed)
    affine = g.affine_lps()
    for i, j, k in _all_voxels(g):
        np.testing.assert_allclose(affine @ [i, j, k, 1], [*g.voxel_lps(i, j, k), 1], atol=1e-9)
    np.testing.assert_allclose(g.affine_ras(), LPS_TO_RAS @ affine)
    # The slice column is the file's slice_dir times the spacing, never read x phase.
    np.testing.assert_allclose(affine[:3, 2], 7.5 * np.asarray(g.slices[0].slice_dir), atol=1e-12)
    assert np.sign(np.linalg.det(affine[:3, :3])) == (-1 if left_handed else 1)


def test_fov_centre_is_voxel_half_n_and_spacings():
    g = oblique_geometry(matrix=(10, 8), fov_mm=(25.0, 16.0, 6.0))
    assert g.pixel_spacing == (2.5, 2.0) and g.slice_thickness == 6.0
    assert g.slice_spacing == pytest.approx(7.5)
    for k in range(g.nz):
        np.testing.assert_allclose(g.voxel_lps(5, 4, k), g.slices[k].position, atol=1e-12)
    # First voxel: FOV/2 back along both in-plane axes (n even), as Gadgetron writes ImagePositionPatient.
    s = g.slices[0]
    expected = np.asarray(s.position) - 12.5 * np.asarray(s.read_dir) - 8.0 * np.asarray(s.phase_dir)
    np.testing.assert_allclose(g.first_voxel_lps(0), expected, atol=1e-12)


def test_single_slice_uses_the_thickness_as_third_column():
    g = oblique_geometry(nz=1)
    assert g.is_regular_stack and g.slice_spacing is None
    np.testing.assert_allclose(np.linalg.norm(g.affine_lps()[:3, 2]), 6.0)


def test_irregular_stacks_have_no_affine():
    g = oblique_geometry(nz=3)
    s0, s1, s2 = g.slices
    # Unequal spacing.
    far = SliceGeometry(
        np.asarray(s2.position) + 2.0 * np.asarray(s2.slice_dir), s2.read_dir, s2.phase_dir, s2.slice_dir
    )
    # A slice shifted in-plane (equal steps along slice_dir would not be enough).
    shifted = SliceGeometry(
        np.asarray(s1.position) + 3.0 * np.asarray(s1.read_dir), s1.read_dir, s1.phase_dir, s1.slice_dir
    )
    # Another view (cine LAX: 2-, 3-, 4-chamber slices in one file).
    turned = SliceGeometry(s1.position, s1.phase_dir, s1.read_dir, tuple(-np.asarray(s1.slice_dir)))
    for slices in [(s0, s1, far), (s0, shifted, s2), (s0, turned, s2), (s2, s1, s0)]:
        irregular = ScanGeometry(g.matrix, g.fov_mm, slices)
        assert not irregular.is_regular_stack and irregular.slice_spacing is None
        with pytest.raises(ValueError, match="not a regular stack"):
            irregular.affine_lps()
    assert g.subset([0, 2]).is_regular_stack and g.subset([0, 2]).slice_spacing == pytest.approx(15.0)


def test_json_round_trip():
    g = oblique_geometry(trigger_times_ms=[0.0, 37.5, 75.0])
    back = ScanGeometry.from_dict(json.loads(json.dumps(g.to_dict())))
    assert back == g
    np.testing.assert_allclose(back.affine_ras(), g.affine_ras())


def test_bad_records_are_refused():
    with pytest.raises(ValueError, match="unit vector"):
        SliceGeometry((0, 0, 0), (2, 0, 0), (0, 1, 0), (0, 0, 1))
    with pytest.raises(ValueError, match="3 finite numbers"):
        SliceGeometry((0, 0, np.nan), (1, 0, 0), (0, 1, 0), (0, 0, 1))
    with pytest.raises(ValueError, match="at least one slice"):
        ScanGeometry((8, 8), (8.0, 8.0, 5.0), ())
