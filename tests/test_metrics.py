"""PSNR / SSIM against scikit-image (DeepDeblur-PyTorch's protocol)."""

import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from tfdeblur.metrics import gaussian_window_1d, psnr, ssim


def sk_ssim(a, b):
    return structural_similarity(
        a.astype(np.float64),
        b.astype(np.float64),
        channel_axis=-1,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1,
    )


@pytest.mark.parametrize("shape", [(11, 11, 3), (23, 40, 3), (64, 37, 1)])
def test_ssim_matches_skimage_on_random_images(shape):
    rng = np.random.default_rng(sum(shape))
    a = rng.uniform(size=shape).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.1, size=shape), 0, 1).astype(np.float32)
    assert float(ssim(a, b)) == pytest.approx(sk_ssim(a, b), abs=2e-5)


def test_ssim_and_psnr_batched_match_per_image():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(3, 20, 24, 3)).astype(np.float32)
    b = np.clip(a + rng.normal(scale=0.05, size=a.shape), 0, 1).astype(np.float32)
    s, p = np.asarray(ssim(a, b)), np.asarray(psnr(a, b))
    for i in range(3):
        assert s[i] == pytest.approx(sk_ssim(a[i], b[i]), abs=2e-5)
        assert p[i] == pytest.approx(peak_signal_noise_ratio(b[i], a[i], data_range=1), abs=1e-3)


def test_metrics_on_real_gopro_pair(gopro_samples):
    import imageio.v3 as iio

    blur = iio.imread(gopro_samples / "Istanbul_blur1.png")[:256, :384].astype(np.float32) / 255
    sharp = iio.imread(gopro_samples / "Istanbul_sharp1.png")[:256, :384].astype(np.float32) / 255
    assert float(ssim(blur, sharp)) == pytest.approx(sk_ssim(blur, sharp), abs=2e-5)
    assert float(psnr(blur, sharp)) == pytest.approx(
        peak_signal_noise_ratio(sharp, blur, data_range=1), abs=1e-3
    )


def test_identical_images():
    a = np.random.default_rng(1).uniform(size=(16, 16, 3)).astype(np.float32)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    assert np.isinf(float(psnr(a, a)))


def test_gaussian_window_is_fspecial_and_scipys():
    """One window for both SSIM variants: 11 taps; its outer product is the normalised 2-D
    Gaussian (MATLAB's ``fspecial('gaussian', 11, 1.5)``), and it is the kernel scipy's
    ``gaussian_filter(sigma=1.5, truncate=3.5)`` (scikit-image's SSIM) applies."""
    from scipy.ndimage import gaussian_filter

    g = gaussian_window_1d()
    assert g.shape == (11,) and g.dtype == np.float64
    u, v = np.meshgrid(np.arange(-5, 6), np.arange(-5, 6))
    window = np.exp(-(u**2 + v**2) / (2 * 1.5**2))
    np.testing.assert_allclose(np.outer(g, g), window / window.sum(), rtol=1e-14, atol=0)
    impulse = np.zeros(11)
    impulse[5] = 1
    np.testing.assert_allclose(
        gaussian_filter(impulse, sigma=1.5, truncate=3.5, mode="constant"), g, atol=1e-15
    )
