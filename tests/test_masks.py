"""Sampling masks against the exact facts of docs/design.md, "Masks" and "Inferred ACS width"."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bundle.mri import centered_bounds, rhu
from bundle.networks.sensnet import infer_num_low_frequencies
from bundle.transforms.masks import (
    PATTERNS,
    _place_unique,
    acs_bounds,
    canonical_pattern,
    effective_acceleration,
    is_cartesian,
    kt_gaussian_mask,
    kt_radial_mask,
    kt_uniform_mask,
    make_mask,
    radial_beam_count,
    sampled_fraction,
    uniform_mask,
)


def infer_acs_width(mask_line) -> int:
    """The ACS width SensNet infers from a NumPy mask with ky last: its first line (first frame, first kx)."""
    line = np.asarray(mask_line)
    first = line.reshape(-1, line.shape[-1])[:1] != 0
    return int(infer_num_low_frequencies(torch.from_numpy(first))[0])


# docs/design.md "Masks" (Uniform): ny -> (first ACS line, last ACS line inclusive, lines at R = 4, 8, 10)
UNIFORM_TABLE = {
    246: (115, 130, 74, 45, 39),
    204: (94, 109, 63, 40, 36),
    180: (82, 97, 57, 37, 33),
    168: (76, 91, 54, 35, 31),
    162: (73, 88, 53, 35, 32),
    144: (64, 79, 48, 32, 30),
    116: (50, 65, 41, 29, 26),
}
KT_R = (4, 8, 12, 16, 20, 24)


@pytest.mark.parametrize("ny", sorted(UNIFORM_TABLE))
def test_uniform_matches_table(ny):
    first, last, *counts = UNIFORM_TABLE[ny]
    assert acs_bounds(ny) == (first, last + 1) == (ny // 2 - 8, ny // 2 + 8)
    ky = np.arange(ny)
    for r, count in zip((4, 8, 10), counts):
        mask = uniform_mask(ny, r)
        assert mask.dtype == np.float32 and mask.shape == (ny,)
        expected = (ky % r == 0) | ((ky >= first) & (ky <= last))
        np.testing.assert_array_equal(mask, expected.astype(np.float32))
        assert int(mask.sum()) == count
        assert infer_acs_width(mask) == 16


def test_acs_uses_matlab_centring_for_odd_sizes():
    # fastMRI's (ny - 16 + 1) // 2 would start one line later for odd ny.
    assert acs_bounds(117) == (50, 66)
    assert acs_bounds(117, 5) == (56, 61) == centered_bounds(117, 5)
    assert int(uniform_mask(117, 64).sum()) == 1 + 16  # lattice lines 0 and 64; 64 lies inside ACS [50, 66)


def test_uniform_offset_shifts_the_lattice():
    mask = uniform_mask(40, 4, acs_width=0, offset=3)
    np.testing.assert_array_equal(np.flatnonzero(mask), np.arange(3, 40, 4))


def test_kt_uniform_lattice_rule():
    nt, ny, r = 12, 168, 8
    mask = kt_uniform_mask(nt, ny, r, acs_width=0)
    t, ky = np.meshgrid(np.arange(nt), np.arange(ny), indexing="ij")
    np.testing.assert_array_equal(mask, ((ky - t) % r == 0).astype(np.float32))
    with_acs = kt_uniform_mask(nt, ny, r)
    lo, hi = acs_bounds(ny)
    assert np.all(with_acs[:, lo:hi] == 1)
    np.testing.assert_array_equal(np.delete(with_acs, np.s_[lo:hi], axis=1), np.delete(mask, np.s_[lo:hi], axis=1))
    # Even nt: the reference reproduction changes nothing.
    np.testing.assert_array_equal(kt_uniform_mask(nt, ny, r, reference_odd_nt=True), with_acs)


def test_kt_uniform_reference_odd_nt_example():
    # docs/design.md "ktUniform with odd nt": ny=116, nt=3, R=8 gives 16 / 14 / 8 lines per frame before the ACS
    # band is added.
    ref = kt_uniform_mask(3, 116, 8, acs_width=0, reference_odd_nt=True)
    assert ref.sum(axis=1).tolist() == [16, 14, 8]
    assert ref[0, 0] == 1  # collapsed points land on (ky=0, t=0)
    # Frame 2 keeps the points of ideal frame 2 with ky >= 58, moved down by 58: 0, 8, ..., 56.
    np.testing.assert_array_equal(np.flatnonzero(ref[2]), np.arange(0, 57, 8))
    with_acs = kt_uniform_mask(3, 116, 8, reference_odd_nt=True)
    assert np.all(with_acs[:, 50:66] == 1)
    assert not np.array_equal(with_acs, kt_uniform_mask(3, 116, 8))


@pytest.mark.parametrize("ny", [246, 168, 116])
@pytest.mark.parametrize("r", KT_R)
def test_kt_uniform_fraction(ny, r):
    # Each frame holds floor or ceil of ny/R lattice lines; the ACS band adds 16 lines minus those of the
    # lattice it already contains (ceil(16/R) at most): the bounds are exact, not statistical.
    mask = kt_uniform_mask(12, ny, r)
    per_frame = mask.sum(axis=1)
    assert np.all(per_frame >= ny // r + 16 - math.ceil(16 / r))
    assert np.all(per_frame <= math.ceil(ny / r) + 16)


def test_place_unique_moves_duplicates_to_the_nearest_free_line():
    # Second 5: 4 and 6 are equally near, the lower wins; third 5 takes 6; 0 is taken so 0 -> 1.
    taken = _place_unique(np.array([5, 5, 5, 0, 0]), 10)
    np.testing.assert_array_equal(np.flatnonzero(taken), [0, 1, 4, 5, 6])
    # At the edge only one side exists.
    np.testing.assert_array_equal(np.flatnonzero(_place_unique(np.array([9, 9, 9]), 10)), [7, 8, 9])
    assert _place_unique(np.zeros(15, dtype=int), 10).all()  # more draws than lines fill everything


@pytest.mark.parametrize("ny", [246, 116, 30])
@pytest.mark.parametrize("r", KT_R)
def test_kt_gaussian_draws_n_distinct_lines_per_frame(ny, r):
    n = rhu(ny / r)
    drawn = kt_gaussian_mask(8, ny, r, np.random.default_rng(r), acs_width=0)
    assert drawn.sum(axis=1).tolist() == [n] * 8
    # n = rhu(ny/R) is within half a line of ny/R, so the drawn fraction is 1/R to within 0.5/ny.
    assert abs(sampled_fraction(drawn) - 1 / r) <= 0.5 / ny + 1e-12
    mask = kt_gaussian_mask(8, ny, r, np.random.default_rng(r))
    lo, hi = acs_bounds(ny)
    assert np.all(mask[:, lo:hi] == 1)
    assert np.all((mask.sum(axis=1) >= max(n, 16)) & (mask.sum(axis=1) <= n + 16))


def test_kt_gaussian_is_centre_weighted_and_seeded():
    a = kt_gaussian_mask(200, 246, 8, np.random.default_rng(7), acs_width=0)
    b = kt_gaussian_mask(200, 246, 8, np.random.default_rng(7), acs_width=0)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, kt_gaussian_mask(200, 246, 8, np.random.default_rng(8), acs_width=0))
    # P(centre) / P(edge) = (0.1 + 0.25) / (0.1 + 0.25 e^-6.25): the centre lines are picked far more often.
    use = a.mean(axis=0)
    assert use[113:133].mean() > 2.0 * np.concatenate([use[:20], use[-20:]]).mean()
    assert not np.array_equal(a[0], a[1])  # frames differ


def test_radial_beam_counts():
    assert [radial_beam_count(r) for r in KT_R] == [75, 37, 25, 18, 15, 12]


def test_kt_radial_structure():
    nt, nx, ny = 3, 96, 64
    mask = kt_radial_mask(nt, nx, ny, 8)
    assert mask.shape == (nt, nx, ny) and mask.dtype == np.float32
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert np.all(mask[:, nx // 2 - 8 : nx // 2 + 8, ny // 2 - 8 : ny // 2 + 8] == 1)
    assert not np.all(mask == mask[:, :1])  # varies along kx
    assert not np.array_equal(mask[0], mask[1])  # golden-angle rotation per frame
    assert not is_cartesian(mask)
    # Frame 0 at angle 0 holds the unrotated line: row rhu(a/2) - 1 = 47 of the 96x96 grid, cropped to
    # columns [16, 80) (all of the crop).
    assert np.all(mask[0, 47] == 1)
    np.testing.assert_array_equal(kt_radial_mask(nt, nx, ny, 8), mask)  # deterministic (and cached)


@pytest.mark.parametrize("nx, ny", [(512, 246), (448, 168), (384, 116)])
def test_kt_radial_fraction(nx, ny):
    # No density is published for ktRadial: R' = 0.6 R is an empirical calibration and a pseudo-radial
    # line covers about its chord length in pixels, so the density depends on the grid's aspect. Measured
    # effective accelerations on the real shape groups are 0.66 R .. 1.18 R; the bound adds ~5% margin.
    for r in KT_R:
        ratio = effective_acceleration(kt_radial_mask(2, nx, ny, r)) / r
        assert 0.6 < ratio < 1.25, (r, ratio)


def test_is_cartesian():
    assert is_cartesian(make_mask("Uniform", 4, 2, 32, 64))
    assert is_cartesian(make_mask("ktUniform", 8, 5, 32, 64))
    assert is_cartesian(make_mask("ktGaussian", 8, 5, 32, 64, rng=np.random.default_rng(0)))
    assert not is_cartesian(make_mask("ktRadial", 8, 5, 32, 64))
    holed = make_mask("Uniform", 4, 2, 32, 64)
    holed[1, 3, 30] = 0
    assert not is_cartesian(holed)


def test_infer_acs_width():
    assert infer_acs_width(np.ones(20)) == 20
    assert infer_acs_width(np.zeros(20)) == 1
    line = uniform_mask(64, 17, acs_width=16)  # lines 17 and 51 are not adjacent to ACS [24, 40)
    assert infer_acs_width(line) == 16
    line[23] = line[22] = 1  # a two-line extension on the left only: min() ignores it
    assert infer_acs_width(line) == 16
    line[40] = line[41] = 1
    assert infer_acs_width(line) == 20
    # A (F, nx, ny) mask is read at its first frame and first kx.
    stack = np.zeros((2, 3, 64))
    stack[0, 0, 28:36] = 1
    assert infer_acs_width(stack) == 8


def test_make_mask_dispatch_and_names():
    for alias, name in [("uniform", "Uniform"), ("KT_UNIFORM", "ktUniform"), ("kt_gaussian", "ktGaussian"),
                        ("ktradial", "ktRadial"), ("ktRadial", "ktRadial")]:  # fmt: skip
        assert canonical_pattern(alias) == name
    assert canonical_pattern("ktGaussian") in PATTERNS
    m = make_mask("ktuniform", 8, 4, 10, 48)
    assert m.shape == (4, 10, 48) and m.dtype == np.float32 and m.flags.c_contiguous
    np.testing.assert_array_equal(m, np.broadcast_to(kt_uniform_mask(4, 48, 8)[:, None], m.shape))
    u = make_mask("Uniform", 4, 3, 5, 48)
    np.testing.assert_array_equal(u, np.broadcast_to(uniform_mask(48, 4), u.shape))
    g1 = make_mask("ktGaussian", 8, 4, 6, 48, rng=np.random.default_rng(3))
    g2 = make_mask("ktGaussian", 8, 4, 6, 48, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(g1, g2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pattern": "spiral"}, "valid names are Uniform, ktUniform, ktGaussian, ktRadial"),
        ({"pattern": None}, "unknown sampling pattern"),
        ({"acceleration": 0}, "acceleration must be >= 1"),
        ({"acceleration": 2.5}, "acceleration must be an integer"),
        ({"acceleration": 65}, "<= 64"),
        ({"acceleration": "4"}, "acceleration must be an integer"),
        ({"ny": 16}, "must exceed the ACS width 16"),
        ({"ny": -3}, "ny must be >= 1"),
        ({"nt": 0}, "nt must be >= 1"),
        ({"acs_width": -1}, "acs_width must be >= 0"),
        ({"pattern": "ktRadial", "nx": 12}, "nx=12 is smaller than the ACS block 16"),
    ],
)
def test_make_mask_rejects_bad_arguments(kwargs, message):
    args = {"pattern": "Uniform", "acceleration": 4, "nt": 2, "nx": 20, "ny": 40, **kwargs}
    with pytest.raises(ValueError, match=message):
        make_mask(**args)


def test_integral_floats_are_accepted():
    np.testing.assert_array_equal(make_mask("Uniform", 4.0, 1, 2, 40), make_mask("Uniform", 4, 1, 2, 40))


def _radial_by_definition(nt, nx, ny, r, block=16):
    """ktRadial straight from docs/design.md "Masks": rotate the whole a×a line image, crop, OR; no shortcuts."""
    a = max(nx, ny)
    c = (a - 1) / 2
    row0, col0 = centered_bounds(a, nx)[0], centered_bounds(a, ny)[0]
    rows, cols = np.mgrid[0:a, 0:a].astype(np.float64)
    x, y = cols - c, c - rows
    beams = radial_beam_count(r)
    out = np.zeros((nt, nx, ny), dtype=bool)
    for t in range(nt):
        for k in range(beams + 1):
            th = math.radians((137.5 * t + k * 180 / beams) % 360)
            src_r = np.floor(c - (-x * math.sin(th) + y * math.cos(th)) + 0.5)
            src_c = np.floor(c + (x * math.cos(th) + y * math.sin(th)) + 0.5)
            rotated = (src_r == rhu(a / 2) - 1) & (src_c >= 0) & (src_c <= a - 1)
            out[t] |= rotated[row0 : row0 + nx, col0 : col0 + ny]
    out[:, nx // 2 - block // 2 : nx // 2 + block // 2, ny // 2 - block // 2 : ny // 2 + block // 2] = True
    return out.astype(np.float32)


@pytest.mark.parametrize("nt, nx, ny, r", [(3, 40, 24, 4), (2, 17, 33, 12), (2, 50, 50, 24), (1, 64, 19, 8)])
def test_kt_radial_fast_path_equals_definition(nt, nx, ny, r):
    np.testing.assert_array_equal(kt_radial_mask(nt, nx, ny, r), _radial_by_definition(nt, nx, ny, r))
