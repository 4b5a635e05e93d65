"""Core MRI maths: the RSS coil combination and the challenge ROI crop."""

from __future__ import annotations

import numpy as np
import torch

from bundle.mri import crop_roi, roi_bounds, rss, rss_np


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
