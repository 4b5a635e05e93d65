"""Core MRI maths: the centred FFT, the RSS coil combination and the challenge ROI crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bundle.mri import crop_roi, fft2c, ifft2c, roi_bounds, rss, rss_np


def test_rss_gradient_is_finite_and_zero_at_an_all_zero_pixel():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 6, 5, dtype=torch.complex64, generator=generator)
    x[:, :, 2, 3] = 0  # every coil zero at one pixel
    x.requires_grad_(True)
    out = rss(x, dim=1)
    assert out[0, 2, 3] == 0
    out.sum().backward()
    assert torch.isfinite(torch.view_as_real(x.grad)).all()
    assert (x.grad[:, :, 2, 3] == 0).all()
    # elsewhere the gradient of sqrt(sum |x|^2) is x / rss
    expected = x.detach() / out.detach().unsqueeze(1)
    keep = torch.ones(6, 5, dtype=torch.bool)
    keep[2, 3] = False
    torch.testing.assert_close(x.grad[..., keep], expected[..., keep])


def test_rss_matches_numpy_and_real_input():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((3, 8, 7)) + 1j * rng.standard_normal((3, 8, 7))).astype(np.complex64)
    np.testing.assert_allclose(rss(torch.from_numpy(x), dim=0).numpy(), rss_np(x, axis=0), rtol=1e-6)
    real = torch.from_numpy(np.abs(x))
    np.testing.assert_allclose(rss(real, dim=0).numpy(), rss_np(np.abs(x), axis=0), rtol=1e-6)


def test_crop_roi_on_any_two_axes():
    volume = np.arange(2 * 3 * 30 * 16).reshape(2, 3, 30, 16)
    (r0, r1), (c0, c1) = roi_bounds(30, 16)
    np.testing.assert_array_equal(crop_roi(volume), volume[..., r0:r1, c0:c1])
    matlab_order = np.moveaxis(volume, (2, 3), (0, 1))  # (nx, ny, ...)
    np.testing.assert_array_equal(crop_roi(matlab_order, axes=(0, 1)), matlab_order[r0:r1, c0:c1])


@pytest.mark.parametrize("shape", [(2, 3, 8, 6), (1, 16, 10), (2, 9, 7), (3, 8, 5)])
def test_centred_fft_equals_its_shift_definition(shape):
    """fft2c / ifft2c (a checkerboard sign product for even sizes) equal fftshift(F(ifftshift(x))), ortho."""
    torch.manual_seed(0)
    x = torch.randn(*shape, dtype=torch.complex64)
    for fn, transform in ((fft2c, torch.fft.fft2), (ifft2c, torch.fft.ifft2)):
        expected = torch.fft.fftshift(transform(torch.fft.ifftshift(x, dim=(-2, -1)), norm="ortho"), dim=(-2, -1))
        torch.testing.assert_close(fn(x), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ifft2c(fft2c(x)), x, rtol=1e-5, atol=1e-6)
    # TorchScript compiles both branches of the size test.
    torch.testing.assert_close(torch.jit.script(fft2c)(x), fft2c(x))
