"""Property-based checks of the mask builders and neighbour stacking over the whole argument space."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bundle.transforms import MAX_ACCELERATION, StackNeighboursd, acs_bounds, make_mask, sampled_fraction

SETTINGS = settings(max_examples=50, deadline=None)
CARTESIAN = ("Uniform", "ktUniform", "ktGaussian")


@SETTINGS
@given(
    pattern=st.sampled_from(CARTESIAN + ("ktRadial",)),
    r=st.integers(1, MAX_ACCELERATION),
    nt=st.integers(1, 30),
    nx=st.integers(16, 64),
    ny=st.integers(20, 600),
    seed=st.integers(0, 2**32 - 1),
)
def test_masks_are_well_formed(pattern, r, nt, nx, ny, seed):
    mask = make_mask(pattern, r, nt, nx, ny, rng=np.random.default_rng(seed))
    assert mask.shape == (nt, nx, ny) and mask.dtype == np.float32
    assert np.isin(mask, (0.0, 1.0)).all()
    lo, hi = acs_bounds(ny)
    frac = sampled_fraction(mask)
    assert frac <= 1.0
    if pattern == "ktRadial":
        assert np.all(mask[:, nx // 2 - 8 : nx // 2 + 8, lo:hi] == 1)
        # Thin pseudo-radial lines give a density that depends on the grid aspect (measured >= 0.75/R on
        # this domain); half of 1/R leaves room and still catches a missing or mis-cropped set of beams.
        assert frac >= 0.5 / r
    else:
        assert np.all(mask[:, :, lo:hi] == 1)
        assert np.all(mask == mask[:, :1])  # Cartesian: constant along kx
        # Every frame holds at least rhu(ny/R) >= ny/R - 0.5 (ktGaussian) or floor(ny/R) plus a non-lattice
        # ACS line (the ktUniform lattice cannot fill a 16-line band unless R = 1), so the fraction is at
        # least 1/R up to half a line.
        assert frac >= 1 / r - 0.5 / ny - 1e-12


BAD_ARGUMENTS = st.one_of(
    st.fixed_dictionaries({"acceleration": st.one_of(st.integers(-5, 0), st.integers(MAX_ACCELERATION + 1, 10**6))}),
    st.fixed_dictionaries({"acceleration": st.floats(allow_nan=True).filter(lambda x: not float(x).is_integer())}),
    st.fixed_dictionaries({"nt": st.integers(-10, 0)}),
    st.fixed_dictionaries({"nx": st.integers(-10, 0)}),
    st.fixed_dictionaries({"ny": st.integers(-10, 16)}),
    st.fixed_dictionaries({"acs_width": st.integers(-10, -1)}),
    st.fixed_dictionaries({"pattern": st.text(max_size=12).filter(lambda s: s.lower() not in _KNOWN)}),
    st.fixed_dictionaries({"pattern": st.sampled_from([None, 3, b"Uniform"])}),
    st.fixed_dictionaries({"ny": st.sampled_from([None, "40", 40.5, True])}),
)
_KNOWN = {"uniform", "ktuniform", "ktgaussian", "ktradial", "kt_uniform", "kt_gaussian", "kt_radial"}


@SETTINGS
@given(pattern=st.sampled_from(CARTESIAN + ("ktRadial",)), bad=BAD_ARGUMENTS)
def test_bad_arguments_raise_a_clear_value_error(pattern, bad):
    args = {"pattern": pattern, "acceleration": 4, "nt": 3, "nx": 20, "ny": 40, "rng": np.random.default_rng(0)}
    args.update(bad)
    with pytest.raises(ValueError) as err:
        make_mask(**args)
    name = next(iter(bad))
    assert (name if name != "pattern" else "sampling pattern") in str(err.value)


@SETTINGS
@given(data=st.data(), nt=st.integers(1, 40))
def test_stack_neighbours_centres_on_t(data, nt):
    t = data.draw(st.integers(0, nt - 1))
    series = np.arange(nt)[:, None, None] * np.ones((1, 2, 3))
    d = StackNeighboursd(keys="mask")({"mask": series, "t": t})
    assert d["mask"].shape == (5, 2, 3)
    frames = d["mask"][:, 0, 0].astype(int).tolist()
    assert frames == d["frames"] and frames[2] == t
    if nt >= 5:
        assert frames == [(t + d) % nt for d in range(-2, 3)]  # circular wrap
    else:
        # Short series: the span shrinks to floor(nt/2) frames each side and the edges are replicated.
        assert set(frames) == {(t + d) % nt for d in range(-(nt // 2), nt // 2 + 1)}
        assert frames[0] == frames[1] or nt == 4
