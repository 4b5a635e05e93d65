"""k-space functions and dictionary transforms on tiny synthetic samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.errors import EmptySliceError, MaskMismatchError, NonFiniteDataError, ShapeError
from bundle.mri import fft2c_np, ifft2c_np, rss_np
from bundle.transforms import (
    ApplyMaskd,
    CheckFinited,
    CoilCompressd,
    MakeTargetd,
    NormalizeKspaced,
    RandKspaceMaskd,
    StackFramesToChannelsd,
    StackNeighboursd,
    centre_frame_target,
    coil_compress,
    denormalize,
    extract_acs,
    is_cartesian,
    make_mask,
    normalization_scale,
    normalize,
    undersample,
)

F, C, NX, NY = 5, 4, 24, 20


def _images(rng, frames, coils, nx, ny):
    """Smooth complex coil images ``(frames, coils, nx, ny)`` with a bright blob, like a small MR slice."""
    x, y = np.meshgrid(np.linspace(-1, 1, nx), np.linspace(-1, 1, ny), indexing="ij")
    body = np.exp(-(x**2 + y**2) * 3)
    sens = rng.normal(size=(coils, 1, 1)) + 1j * rng.normal(size=(coils, 1, 1))
    img = (
        body * (1 + 0.3 * rng.normal(size=(frames, 1, nx, ny))) * sens * np.exp(1j * x * rng.normal(size=(coils, 1, 1)))
    )
    return (img * 1e-3).astype(np.complex64)


def _sample(rng, frames=F, coils=C, nx=NX, ny=NY, nt=12, t=3, **extra):
    kspace = fft2c_np(_images(rng, frames, coils, nx, ny)).astype(np.complex64)
    d = {"kspace_full": kspace, "file": "P001/cine_sax.mat", "z": 2, "t": t, "nt": nt}
    d["frames"] = [(t + k) % nt for k in range(-(frames // 2), frames // 2 + 1)]
    d.update(extra)
    return d


# --- neighbour stacking -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "nt, t, frames",
    [
        (12, 0, [10, 11, 0, 1, 2]),
        (12, 11, [9, 10, 11, 0, 1]),
        (9, 8, [6, 7, 8, 0, 1]),
        (3, 0, [2, 2, 0, 1, 1]),
        (3, 2, [1, 1, 2, 0, 0]),
        (1, 0, [0, 0, 0, 0, 0]),
    ],
)
def test_stack_neighbours(nt, t, frames):
    series = np.arange(nt, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, 3, 4), np.float32)
    mask = np.arange(nt, dtype=np.float32)[:, None, None] * np.ones((1, 3, 4), np.float32)
    d = StackNeighboursd(keys=("kspace_full", "mask"))({"kspace_full": series, "mask": mask, "t": t})
    assert d["frames"] == frames and d["nt"] == nt
    assert d["kspace_full"].shape == (5, 2, 3, 4) and d["mask"].shape == (5, 3, 4)
    assert d["kspace_full"][:, 0, 0, 0].tolist() == frames
    assert d["mask"][:, 0, 0].tolist() == frames


def test_stack_neighbours_rejects_inconsistent_nt():
    with pytest.raises(ShapeError, match="nt=9"):
        StackNeighboursd(keys="kspace_full")({"kspace_full": np.zeros((12, 1, 2, 2)), "t": 0, "nt": 9, "file": "f"})


# --- plain k-space functions --------------------------------------------------------------------------------


def test_undersample_numpy_and_torch(rng):
    k = _sample(rng)["kspace_full"]
    mask = make_mask("ktUniform", 4, F, NX, NY)
    out = undersample(k, mask)
    assert out.dtype == np.complex64 and out.shape == k.shape
    np.testing.assert_array_equal(out, k * mask[:, None])
    out64 = undersample(k, mask.astype(np.float64))  # a MATLAB double mask must not promote the k-space
    assert out64.dtype == np.complex64
    out_t = undersample(torch.from_numpy(k), torch.from_numpy(mask))
    assert out_t.dtype == torch.complex64
    np.testing.assert_array_equal(out_t.numpy(), out)
    np.testing.assert_array_equal(undersample(k, mask[0]), k * mask[0])  # shared (nx, ny) mask


def test_undersample_rejects_mismatched_mask(rng):
    k = _sample(rng)["kspace_full"]
    with pytest.raises(MaskMismatchError, match=r"^P9/x\.mat: mask of shape \(5, 20, 24\)"):
        undersample(k, np.ones((F, NY, NX), np.float32), file="P9/x.mat")
    with pytest.raises(MaskMismatchError):
        undersample(k, np.ones((3, NX, NY), np.float32))


def test_extract_acs_cartesian_and_radial():
    k = np.ones((2, 3, 40, 30), np.complex64)
    cart = extract_acs(k, 16)
    assert np.all(cart[..., 7:23] == 1) and cart.sum() == 2 * 3 * 40 * 16
    radial = extract_acs(k, make_mask("ktRadial", 8, 2, 40, 30))
    assert np.all(radial[..., 12:28, 7:23] == 1) and radial.sum() == 2 * 3 * 16 * 16
    by_mask = extract_acs(torch.from_numpy(k), torch.from_numpy(make_mask("Uniform", 4, 2, 40, 30)))
    np.testing.assert_array_equal(by_mask.numpy(), cart)


def test_centre_frame_target(rng):
    d = _sample(rng)
    image, kc = centre_frame_target(d["kspace_full"])
    assert image.shape == (1, NX, NY) and image.dtype == np.float32
    assert kc.shape == (C, NX, NY) and kc.dtype == np.complex64
    np.testing.assert_array_equal(kc, d["kspace_full"][F // 2])
    np.testing.assert_allclose(image[0], rss_np(ifft2c_np(d["kspace_full"][2].astype(np.complex128))), rtol=1e-5)
    t_image, t_kc = centre_frame_target(torch.from_numpy(d["kspace_full"]))
    # atol: torch's and numpy's FFTs round differently, which near-zero pixels show as a large relative difference
    np.testing.assert_allclose(t_image.numpy(), image, rtol=1e-5, atol=1e-6 * float(image.max()))


def test_coil_compression_preserves_a_three_dimensional_coil_subspace(rng):
    base = rng.normal(size=(F, 3, NX, NY)) + 1j * rng.normal(size=(F, 3, NX, NY))
    mix = rng.normal(size=(8, 3)) + 1j * rng.normal(size=(8, 3))
    images = np.einsum("cv,fvxy->fcxy", mix, base).astype(np.complex64)  # 8 coils spanning 3 dimensions
    kspace = fft2c_np(images).astype(np.complex64)
    compressed = coil_compress(kspace, 3)
    assert compressed.shape == (F, 3, NX, NY) and compressed.dtype == np.complex64
    ref = rss_np(ifft2c_np(kspace.astype(np.complex128)), axis=1)
    got = rss_np(ifft2c_np(compressed.astype(np.complex128)), axis=1)
    assert np.abs(got - ref).max() / ref.max() < 1e-5
    # Two virtual coils cannot hold three dimensions: the test above is able to fail.
    two = rss_np(ifft2c_np(coil_compress(kspace, 2).astype(np.complex128)), axis=1)
    assert np.abs(two - ref).max() / ref.max() > 1e-2
    assert coil_compress(kspace, 8) is kspace


def test_coil_compression_commutes_with_masking(rng):
    d = CoilCompressd(num_coils=2, allow_missing_keys=True)(
        ApplyMaskd()(_sample(rng, mask=make_mask("Uniform", 4, F, NX, NY)))
    )
    assert d["kspace_full"].shape == d["kspace_masked"].shape == (F, 2, NX, NY)
    np.testing.assert_allclose(undersample(d["kspace_full"], d["mask"]), d["kspace_masked"], atol=1e-9)
    same = CoilCompressd(num_coils=C, allow_missing_keys=True)(
        _sample(np.random.default_rng(0), kspace_masked=np.zeros((F, C, NX, NY)))
    )
    assert same["kspace_full"].shape[1] == C


@pytest.mark.parametrize("mode", ["max_zf", "percentile_zf"])
def test_normalisation_round_trip_is_bit_exact(rng, mode):
    k = undersample(_sample(rng)["kspace_full"], make_mask("Uniform", 4, F, NX, NY))
    scale = normalization_scale(k, mode)
    assert np.log2(scale) == np.round(np.log2(scale))  # a power of two
    zf = rss_np(ifft2c_np(k[F // 2]))
    ref = zf.max() if mode == "max_zf" else np.percentile(zf, 99.5)
    assert 0.5**0.5 <= scale * ref <= 2**0.5  # nearest power of two of 1 / ref
    assert scale > 100  # data are ~1e-3
    for x in (k, np.abs(k), torch.from_numpy(k), torch.from_numpy(np.abs(k))):
        y = normalize(x, scale)
        assert y.dtype == x.dtype
        back = denormalize(y, scale)
        assert (back == x).all()
    # An arbitrary scale would not round-trip exactly (this is why the scale is a power of two).
    assert not np.array_equal(denormalize(normalize(k, 1000.3), 1000.3), k)


def test_normalisation_commutes_with_the_target(rng):
    d = _sample(rng, mask=make_mask("Uniform", 4, F, NX, NY))
    chain_a = NormalizeKspaced("max_zf")(MakeTargetd()(ApplyMaskd()(d)))
    d2 = NormalizeKspaced("max_zf", keys=("kspace_full",), source_key="kspace_masked")(ApplyMaskd()(d))
    chain_b = MakeTargetd()(d2)
    np.testing.assert_array_equal(chain_a["target"], chain_b["target"])


def test_normalisation_errors():
    with pytest.raises(ValueError, match="valid modes are none, max_zf, percentile_zf"):
        normalization_scale(np.ones((1, 1, 2, 2), np.complex64), "zscore")
    with pytest.raises(EmptySliceError, match=r"^P3/x\.mat: .*all zero"):
        normalization_scale(np.zeros((5, 2, 4, 4), np.complex64), "max_zf", file="P3/x.mat")
    assert normalization_scale(np.zeros((5, 2, 4, 4), np.complex64), "none") == 1.0
    with pytest.raises(ValueError, match="unknown normalisation mode"):
        NormalizeKspaced("bogus")


# --- dictionary transforms ----------------------------------------------------------------------------------


def test_training_chain_shapes_and_dtypes(rng):
    transforms = [
        RandKspaceMaskd(patterns=("Uniform", "ktGaussian", "ktRadial"), kt_accelerations=(8,)),
        ApplyMaskd(),
        MakeTargetd(),
        CheckFinited(),
        NormalizeKspaced("max_zf"),
        StackFramesToChannelsd(),
    ]
    transforms[0].set_random_state(5)
    for _ in range(3):
        d = _sample(rng)
        k_full = d["kspace_full"].copy()
        for tr in transforms:
            d = tr(d)
        assert d["kspace_masked"].shape == (F * C, NX, NY) and d["kspace_masked"].dtype == torch.complex64
        assert d["kspace_masked"].is_contiguous()
        assert d["mask"].shape == (F, NX, NY) and d["mask"].dtype == torch.float32
        assert d["target"].shape == (1, NX, NY) and d["target"].dtype == torch.float32
        assert d["kspace_target"].shape == (C, NX, NY) and d["kspace_target"].dtype == torch.complex64
        assert "kspace_full" not in d and isinstance(d["scale"], float)
        assert d["pattern"] in ("Uniform", "ktGaussian", "ktRadial") and d["acceleration"] in (4, 8, 10)
        # Frame-major channels: channel f*C + c holds frame f, coil c.
        expected = k_full * d["mask"].numpy()[:, None] * d["scale"]
        np.testing.assert_array_equal(d["kspace_masked"].numpy().reshape(F, C, NX, NY), expected)
        np.testing.assert_array_equal(d["kspace_masked"][2 * C + 1].numpy(), expected[2, 1])


def test_rand_mask_takes_the_neighbour_frames_of_the_series_mask(rng):
    tr = RandKspaceMaskd(patterns=("ktUniform",), kt_accelerations=(4,))
    d = tr(_sample(rng, t=0))
    series = make_mask("ktUniform", 4, 12, NX, NY)
    np.testing.assert_array_equal(d["mask"], series[[10, 11, 0, 1, 2]])
    assert d["pattern"] == "ktUniform" and d["acceleration"] == 4


def test_rand_mask_keeps_an_official_mask(rng):
    official = np.ones((F, NX, NY), np.float32)
    d = RandKspaceMaskd(patterns=("ktRadial",))(_sample(rng, mask=official, pattern="ktGaussian", acceleration=8))
    assert d["mask"] is official and d["pattern"] == "ktGaussian" and d["acceleration"] == 8


def test_rand_mask_deterministic_mode(rng):
    kwargs = {"patterns": ("Uniform", "ktUniform", "ktGaussian", "ktRadial"), "deterministic": True, "seed": 3}
    a, b = RandKspaceMaskd(**kwargs), RandKspaceMaskd(**kwargs)
    b.set_random_state(99)  # the random state must not matter in deterministic mode
    seen = set()
    for t in range(8):
        sample = _sample(rng, t=t)
        m1, m2, m3 = a(sample), a(dict(sample)), b(dict(sample))
        np.testing.assert_array_equal(m1["mask"], m2["mask"])
        np.testing.assert_array_equal(m1["mask"], m3["mask"])
        assert (m1["pattern"], m1["acceleration"]) == (m3["pattern"], m3["acceleration"])
        seen.add((m1["pattern"], m1["acceleration"], m1["mask"].tobytes()))
    assert len(seen) > 2  # different samples get different masks
    other_seed = RandKspaceMaskd(**{**kwargs, "seed": 4})
    assert any(
        not np.array_equal(other_seed(_sample(rng, t=t))["mask"], a(_sample(rng, t=t))["mask"]) for t in range(8)
    )
    with pytest.raises(ValueError, match="needs d\\['file'\\]"):
        a({"kspace_full": np.zeros((F, C, NX, NY), np.complex64), "t": 0, "nt": 12})


def test_rand_mask_random_mode_follows_set_random_state(rng):
    kwargs = {"patterns": ("ktGaussian", "Uniform"), "kt_accelerations": (4, 8, 12)}
    a, b = RandKspaceMaskd(**kwargs).set_random_state(11), RandKspaceMaskd(**kwargs).set_random_state(11)
    sample = _sample(rng)
    masks_a = [a(dict(sample))["mask"] for _ in range(4)]
    masks_b = [b(dict(sample))["mask"] for _ in range(4)]
    for ma, mb in zip(masks_a, masks_b):
        np.testing.assert_array_equal(ma, mb)
    assert len({m.tobytes() for m in masks_a}) > 1


def test_rand_mask_validates_its_arguments():
    with pytest.raises(ValueError, match="valid names"):
        RandKspaceMaskd(patterns=("Spiral",))
    with pytest.raises(ValueError, match="accelerations must be >= 1"):
        RandKspaceMaskd(accelerations=(0,))
    with pytest.raises(ValueError, match="pattern_weights"):
        RandKspaceMaskd(patterns=("Uniform", "ktRadial"), pattern_weights=(1.0,))
    only_radial = RandKspaceMaskd(patterns=("Uniform", "ktRadial"), pattern_weights=(0, 1))
    d = only_radial(_sample(np.random.default_rng(0)))
    assert d["pattern"] == "ktRadial" and not is_cartesian(d["mask"])


def test_inference_sample_passes_through(rng):
    d = _sample(rng, mask=make_mask("Uniform", 8, F, NX, NY))
    kus = undersample(d.pop("kspace_full"), d["mask"])
    d["kspace_masked"] = kus
    optional = {"allow_missing_keys": True}  # an undersampled item has no kspace_full
    chain = (ApplyMaskd(**optional), MakeTargetd(**optional), CoilCompressd(2, **optional))
    for tr in (RandKspaceMaskd(), *chain, NormalizeKspaced("max_zf", **optional)):
        d = tr(d)
    assert "target" not in d and d["kspace_masked"].shape == (F, 2, NX, NY)
    out = StackFramesToChannelsd()(d)
    assert out["kspace_masked"].shape == (F * 2, NX, NY)


def test_normalize_inverse(rng):
    d = MakeTargetd()(ApplyMaskd()(_sample(rng, mask=make_mask("Uniform", 4, F, NX, NY))))
    norm = NormalizeKspaced("percentile_zf")
    scaled = norm(d)
    assert scaled["scale"] != 1.0
    restored = norm.inverse(scaled)
    for key in ("kspace_masked", "kspace_full", "kspace_target", "target"):
        np.testing.assert_array_equal(restored[key], d[key])


def test_check_finite(rng):
    d = MakeTargetd()(_sample(rng))
    assert CheckFinited(allow_missing_keys=True)(d) is not d
    bad = dict(d, kspace_full=d["kspace_full"].copy())
    bad["kspace_full"][0, 0, 0, 0] = np.nan
    with pytest.raises(NonFiniteDataError, match=r"P001/cine_sax\.mat \(z=2, t=3\): kspace_full contains NaN"):
        CheckFinited(allow_missing_keys=True)(bad)
    with pytest.raises(EmptySliceError, match=r"\(z=2, t=3\): target is all zero"):
        CheckFinited(allow_missing_keys=True)(dict(d, target=np.zeros((1, NX, NY), np.float32)))
    with pytest.raises(NonFiniteDataError):
        CheckFinited(keys="x")({"x": torch.tensor([1.0, float("inf")])})


def test_transform_errors_name_the_sample(rng):
    d = _sample(rng, mask=np.ones((F, NY, NX), np.float32))
    with pytest.raises(MaskMismatchError, match=r"^P001/cine_sax\.mat \(z=2, t=3\): mask of shape") as err:
        ApplyMaskd()(d)
    assert err.value.path == "P001/cine_sax.mat"
    zero = dict(d, kspace_masked=np.zeros((F, C, NX, NY), np.complex64))
    with pytest.raises(EmptySliceError, match=r"^P001/cine_sax\.mat \(z=2, t=3\): the zero-filled"):
        NormalizeKspaced("max_zf")(zero)
    with pytest.raises(ValueError, match="apply the mask first"):
        CoilCompressd(2)(_sample(rng))


# --- ACS width per release ----------------------------------------------------------------------------------


def _acs_columns(mask: np.ndarray) -> int:
    """Consecutive fully sampled ky columns around the centre of a ``(F, nx, ny)`` mask."""
    line = mask[0, 0] > 0
    c = line.shape[0] // 2
    left = next((i for i in range(c) if not line[c - 1 - i]), c)
    right = next((i for i in range(line.shape[0] - c) if not line[c + i]), line.shape[0] - c)
    return left + right


@pytest.mark.parametrize("acs_width, expected", [(None, 16), (16, 16), (24, 24)])
def test_masks_follow_the_items_acs_width(rng, acs_width, expected):
    extra = {} if acs_width is None else {"acs_width": acs_width}
    d = RandKspaceMaskd(patterns=("Uniform",), accelerations=(10,))(_sample(rng, ny=64, **extra))
    assert expected <= _acs_columns(d["mask"]) <= expected + 2  # + an equispaced line that may touch the band


def test_a_configured_acs_width_overrides_the_item(rng):
    d = RandKspaceMaskd(patterns=("Uniform",), accelerations=(10,), acs_width=16)(_sample(rng, ny=64, acs_width=24))
    assert _acs_columns(d["mask"]) < 24


def test_validation_masks_do_not_depend_on_where_the_dataset_lives(rng):
    from bundle.transforms.dictionary import portable_name

    tail = "ChallengeData/MultiCoil/Cine/TrainingSet/FullSample/P001/cine_sax.mat"
    assert portable_name(f"/data/a/{tail}") == "Cine/TrainingSet/FullSample/P001/cine_sax.mat"
    assert portable_name("/x/y/Cine/TrainingSet/FullSample/P001/cine_sax.mat") == portable_name(f"/b/{tail}")
    masks = []
    for root in ("/home/one/data", "/mnt/elsewhere/copy"):
        sample = _sample(np.random.default_rng(0), ny=64, file=f"{root}/{tail}")
        transform = RandKspaceMaskd(patterns=("Uniform", "ktGaussian"), kt_accelerations=(8,), deterministic=True)
        masks.append(transform(sample)["mask"])
    np.testing.assert_array_equal(*masks)


def test_coil_compression_matrix_spans_the_top_singular_subspace(rng):
    from bundle.transforms.kspace import coil_compression_matrix

    calib = (rng.normal(size=(12, 300)) + 1j * rng.normal(size=(12, 300))) * np.linspace(3, 0.1, 12)[:, None]
    matrix = coil_compression_matrix(calib.astype(np.complex64), 5)
    u = np.linalg.svd(calib, full_matrices=False)[0][:, :5]
    np.testing.assert_allclose(matrix.conj().T @ matrix, u @ u.conj().T, atol=1e-5)  # same projector
    np.testing.assert_allclose(matrix @ matrix.conj().T, np.eye(5), atol=1e-5)  # orthonormal rows
    peaks = matrix.conj()[np.arange(5), np.argmax(np.abs(matrix), axis=1)]
    np.testing.assert_allclose(peaks.imag, 0, atol=1e-6)  # the phase convention: largest entry real, positive
    assert (peaks.real > 0).all()


def test_rand_mask_serves_every_key_and_refuses_stacks_it_cannot_fit(rng):
    d = _sample(rng)
    d["kspace_other"] = d["kspace_full"][:, :2].copy()  # fewer coils, same frames and grid: one mask fits
    out = RandKspaceMaskd(keys=("kspace_full", "kspace_other"))(d)
    assert out["mask"].shape == (F, NX, NY)
    bad = dict(_sample(rng), kspace_other=np.zeros((F, C, NX, NY - 2), np.complex64))
    with pytest.raises(ShapeError, match="need one mask"):
        RandKspaceMaskd(keys=("kspace_full", "kspace_other"))(bad)
    with pytest.raises(KeyError):
        RandKspaceMaskd(keys=("kspace_full", "missing"))(_sample(rng))


def test_zero_filled_columns_is_the_masked_product(rng):
    from bundle.arrays import zero_filled_columns

    k = (rng.standard_normal((3, 2, 7, 9)) + 1j * rng.standard_normal((3, 2, 7, 9))).astype(np.complex64)
    mask = (rng.random((3, 9)) < 0.4).astype(np.float32)
    cols = [np.flatnonzero(m) for m in mask]
    got = zero_filled_columns(k.shape, cols, [k[f][..., c] for f, c in enumerate(cols)])
    np.testing.assert_array_equal(got, k * mask[:, None, None, :])
    assert got.flags.c_contiguous and got.dtype == np.complex64
