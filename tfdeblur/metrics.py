"""Image-quality metrics of the deblurring literature: PSNR and SSIM.

The protocol is DeepDeblur-PyTorch's: PSNR on RGB in [0, 1] without border crop, and
SSIM as ``skimage.metrics.structural_similarity(a, b, channel_axis=-1,
gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1)``.
Both are written in TensorFlow (batched, usable inside ``tf.function`` and as Keras
metrics during validation); the tests check SSIM against scikit-image.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

# SSIM constants shared by both variants (Wang et al. 2004, sec. III-B/C): K1, K2 and the
# Gaussian window of standard deviation 1.5.
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_SIGMA = 1.5
# scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5) -> radius int(3.5 * 1.5 + 0.5) = 5,
# an 11-tap window: the same as MATLAB's fspecial('gaussian', 11, 1.5).
_SSIM_TRUNCATE = 3.5


def psnr(prediction, target, data_range: float = 1.0):
    """Peak signal-to-noise ratio in dB of each image of a batch (RGB, no border crop).

    Args:
        prediction: ``(B, H, W, C)`` or ``(H, W, C)`` images.
        target: same shape.
        data_range: peak value. Default 1.0.

    Returns:
        ``(B,)`` (or scalar for an unbatched input) float32 PSNR; ``inf`` for identical images.
    """
    prediction = tf.cast(prediction, tf.float32)
    target = tf.cast(target, tf.float32)
    mse = tf.reduce_mean(tf.square(prediction - target), axis=[-3, -2, -1])
    return 10.0 * tf.math.log(data_range**2 / mse) / tf.math.log(10.0)


def gaussian_window_1d(sigma: float = _SSIM_SIGMA, truncate: float = _SSIM_TRUNCATE) -> np.ndarray:
    """The normalised 1-D Gaussian both SSIM variants filter with, float64.

    ``exp(-x^2 / (2 sigma^2))`` for ``x`` in ``[-r, r]``, ``r = int(truncate x sigma +
    0.5)`` (scipy's rule; 5 for the defaults), divided by its sum. The 2-D window is the
    outer product with itself, which is also ``fspecial('gaussian', 2r + 1, sigma)``
    (the normalised 2-D Gaussian factors into two normalised 1-D ones).
    """
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _ssim_map(mu_x, mu_y, xx, yy, xy, c1, c2):
    """SSIM map from the filtered moments (eq. 13): works on NumPy arrays and tensors."""
    var_x = xx - mu_x * mu_x
    var_y = yy - mu_y * mu_y
    cov = xy - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )


def ssim(prediction, target, data_range: float = 1.0):
    """Structural similarity of each image of a batch, scikit-image's Gaussian variant.

    Equals ``skimage.metrics.structural_similarity(p, t, channel_axis=-1,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)``:
    local statistics from an 11x11 Gaussian window (sigma 1.5), K1=0.01, K2=0.03, the
    SSIM map averaged over the image without its 5-pixel border (scikit-image crops
    ``(win_size - 1) // 2`` before averaging, so the filter's border mode never matters)
    and over channels.

    Args:
        prediction: ``(B, H, W, C)`` or ``(H, W, C)``, H and W at least 11.
        target: same shape.
        data_range: dynamic range of the images. Default 1.0.

    Returns:
        ``(B,)`` (or scalar) float32 SSIM.
    """
    prediction = tf.cast(prediction, tf.float32)
    target = tf.cast(target, tf.float32)
    unbatched = prediction.shape.rank == 3
    if unbatched:
        prediction, target = prediction[None], target[None]
    channels = prediction.shape[-1]
    if channels is None:
        raise ValueError("ssim needs a known channel count.")
    g = gaussian_window_1d().astype(np.float32)
    size = g.size
    kernel_v = tf.constant(np.tile(g.reshape(size, 1, 1, 1), (1, 1, channels, 1)))
    kernel_h = tf.constant(np.tile(g.reshape(1, size, 1, 1), (1, 1, channels, 1)))

    def blur(x):
        # Separable Gaussian, 'VALID' = the region scikit-image keeps after its border crop.
        x = tf.nn.depthwise_conv2d(x, kernel_v, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(x, kernel_h, [1, 1, 1, 1], "VALID")

    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    ssim_map = _ssim_map(
        blur(prediction), blur(target), blur(prediction * prediction), blur(target * target),
        blur(prediction * target), c1, c2,
    )  # fmt: skip
    result = tf.reduce_mean(ssim_map, axis=[1, 2, 3])
    return result[0] if unbatched else result


# ---------------------------------------------------------------------------------------
# MATLAB-compatible SSIM (Wang et al. 2004, ssim_index.m, on the Y channel)
# ---------------------------------------------------------------------------------------

#: MATLAB ``rgb2ycbcr`` luma row (ITU-R BT.601, studio range): for R, G, B in [0, 1],
#: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` in [16, 235].
_MATLAB_Y = (65.481, 128.553, 24.966)


def rgb_to_y_matlab(rgb, quantize: bool = True) -> np.ndarray:
    """MATLAB's ``rgb2ycbcr`` luma, on the 0-255 scale, float64 ``(..., H, W)``.

    Args:
        rgb: ``(..., H, W, 3)`` floats in ``[0, 1]``.
        quantize: do what MATLAB does on the saved 8-bit images the papers scored: round
            RGB to 8 bits (``round(255 x)``, after clamping) and round Y to an integer
            (``rgb2ycbcr`` of a ``uint8`` image returns ``uint8``). Default True. With
            False, Y is computed from the floats unrounded (BasicSR's ``to_y_channel``).

    Returns:
        Y in ``[16, 235]``.
    """
    rgb = np.asarray(rgb, dtype=np.float64)
    if rgb.shape[-1] != 3:
        raise ValueError(f"rgb_to_y_matlab: expected (..., H, W, 3), got shape {rgb.shape}.")
    if quantize:
        rgb = np.floor(np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5) / 255.0
    y = 16.0 + rgb @ np.asarray(_MATLAB_Y, dtype=np.float64)
    # MATLAB rounds half away from zero when casting to uint8; Y is positive here.
    return np.floor(y + 0.5) if quantize else y


def ssim_matlab(prediction, target, quantize: bool = True) -> np.ndarray:
    """SSIM as Wang et al.'s MATLAB ``ssim_index.m`` computes it on the Y channel.

    The "MATLAB" SSIM of the deblurring literature: ``Y = rgb2ycbcr(image)(:, :, 1)``
    (:func:`rgb_to_y_matlab`), then ``ssim_index(Y_prediction, Y_target)`` with its
    defaults: ``window = fspecial('gaussian', 11, 1.5)`` (normalised), ``K = [0.01
    0.03]``, ``L = 255``, every local statistic by ``filter2(window, ., 'valid')`` (so
    the map is ``(H - 10) x (W - 10)``, no padding), the biased (population) variance
    ``E[x^2] - E[x]^2``, and ``mssim = mean2(ssim_map)``. No downsampling (the 2009
    ``ssim.m`` rescales images wider than 256 px first; ``ssim_index.m`` and the papers'
    scripts do not). Computed in float64.

    It differs from :func:`ssim` (scikit-image's Gaussian variant, the library default)
    only in scoring one luma channel instead of averaging R, G and B, and in the
    rounding of ``quantize``; the window, constants and border handling are the same.

    Reference:
        Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility
        to structural similarity", IEEE TIP 2004, eq. (13) with the Gaussian window of
        sec. III-C; the authors' ``ssim_index.m``.

    Args:
        prediction: ``(H, W, 3)`` or ``(B, H, W, 3)`` floats in ``[0, 1]``, H and W >= 11.
        target: same shape.
        quantize: score 8-bit images and integer Y as MATLAB does on saved PNGs
            (see :func:`rgb_to_y_matlab`). Default True.

    Returns:
        float64 SSIM: a scalar for one image, ``(B,)`` for a batch.
    """
    from scipy.ndimage import correlate1d

    prediction = np.asarray(prediction)
    target = np.asarray(target)
    if prediction.shape != target.shape:
        raise ValueError(f"ssim_matlab: shapes differ, {prediction.shape} vs {target.shape}.")
    if prediction.ndim not in (3, 4) or min(prediction.shape[-3:-1]) < 11:
        raise ValueError(
            f"ssim_matlab: expected (H, W, 3) or (B, H, W, 3) with H, W >= 11, got {prediction.shape}."
        )
    x = rgb_to_y_matlab(prediction, quantize)
    y = rgb_to_y_matlab(target, quantize)
    # fspecial('gaussian', 11, 1.5) is separable: the outer product of this 1-D window.
    g = gaussian_window_1d()
    radius = g.size // 2

    def filt(a):
        a = correlate1d(correlate1d(a, g, axis=-2), g, axis=-1)
        return a[..., radius:-radius, radius:-radius]  # 'valid': drop what saw the border

    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    ssim_map = _ssim_map(filt(x), filt(y), filt(x * x), filt(y * y), filt(x * y), c1, c2)
    return ssim_map.mean(axis=(-2, -1))
