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

# scipy.ndimage.gaussian_filter(sigma=1.5, truncate=3.5) -> radius int(3.5 * 1.5 + 0.5) = 5.
_SSIM_SIGMA = 1.5
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


def _gaussian_kernel_1d(sigma: float, truncate: float) -> np.ndarray:
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return (kernel / kernel.sum()).astype(np.float32)


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
    g = _gaussian_kernel_1d(_SSIM_SIGMA, _SSIM_TRUNCATE)
    size = g.size
    kernel_v = tf.constant(np.tile(g.reshape(size, 1, 1, 1), (1, 1, channels, 1)))
    kernel_h = tf.constant(np.tile(g.reshape(1, size, 1, 1), (1, 1, channels, 1)))

    def blur(x):
        # Separable Gaussian, 'VALID' = the region scikit-image keeps after its border crop.
        x = tf.nn.depthwise_conv2d(x, kernel_v, [1, 1, 1, 1], "VALID")
        return tf.nn.depthwise_conv2d(x, kernel_h, [1, 1, 1, 1], "VALID")

    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu_x, mu_y = blur(prediction), blur(target)
    var_x = blur(prediction * prediction) - mu_x * mu_x
    var_y = blur(target * target) - mu_y * mu_y
    cov = blur(prediction * target) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / (
        (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    )
    result = tf.reduce_mean(ssim_map, axis=[1, 2, 3])
    return result[0] if unbatched else result
