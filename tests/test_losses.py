"""Loss terms against their formulas, with NumPy references written out by hand."""

import numpy as np
import pytest

from tfdeblur.train.losses import DeblurLoss, charbonnier, l1, mse, multiscale_l1, multiscale_mse


def _gaussian_kernel(sigma=2.0 / 3.0, radius=3):
    """scikit-image's pyramid_reduce(downscale=2) smoothing: sigma = 2 * 2 / 6, SciPy's
    gaussian_filter radius int(4 * sigma + 0.5) = 3."""
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    return kernel / kernel.sum()


def _smooth_axis(image, axis, kernel):
    """1-D convolution along ``axis`` with SciPy "reflect" borders (NumPy "symmetric")."""
    radius = len(kernel) // 2
    pad = [(0, 0)] * image.ndim
    pad[axis] = (radius, radius)
    padded = np.pad(image, pad, mode="symmetric")
    size = image.shape[axis]
    return sum(w * np.take(padded, np.arange(i, i + size), axis=axis) for i, w in enumerate(kernel))


def numpy_pyramid(image, levels):
    """Gaussian pyramid of a (B, H, W, C) batch with even sizes, by hand: smooth (sigma
    2/3, reflect), then the mean of each 2x2 cell (linear resize by 1/2 with half-pixel
    centres), each level from the previous one; finest first."""
    kernel = _gaussian_kernel()
    pyramid = [np.asarray(image, np.float64)]
    for _ in range(levels - 1):
        x = _smooth_axis(_smooth_axis(pyramid[-1], 1, kernel), 2, kernel)
        b, h, w, c = x.shape
        pyramid.append(x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4)))
    return pyramid


@pytest.fixture
def images():
    rng = np.random.default_rng(0)
    target = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
    prediction = rng.uniform(size=(2, 16, 24, 3)).astype(np.float32)
    return target, prediction


def test_numpy_pyramid_matches_scikit_image(images):
    """The hand-written reference is the pyramid the official code uses."""
    from skimage.transform import pyramid_gaussian

    target = images[0]
    ours = numpy_pyramid(target, 3)
    for b in range(len(target)):
        reference = list(pyramid_gaussian(target[b].astype(np.float64), 2, channel_axis=-1))
        for level, expected in zip(ours, reference, strict=True):
            np.testing.assert_allclose(level[b], expected, atol=1e-12)


def test_pixel_losses_follow_their_formulas(images):
    target, prediction = images
    d = prediction.astype(np.float64) - target
    np.testing.assert_allclose(float(l1(target, prediction)), np.abs(d).mean(), rtol=1e-6)
    np.testing.assert_allclose(float(mse(target, prediction)), (d**2).mean(), rtol=1e-6)
    eps = 1e-3
    np.testing.assert_allclose(
        float(charbonnier(target, prediction)), np.sqrt(d**2 + eps**2).mean(), rtol=1e-6
    )
    # Charbonnier tends to L1 for |d| >> eps and to eps at d = 0.
    assert float(charbonnier(target, target)) == pytest.approx(eps, rel=1e-5)
    # A hand-checked number: |0.25 - 0| = 0.25, squared 0.0625.
    a, b = np.zeros((1, 2, 2, 3), np.float32), np.full((1, 2, 2, 3), 0.25, np.float32)
    assert float(l1(a, b)) == 0.25 and float(mse(a, b)) == 0.0625


def _predictions(target, levels, seed=1):
    """A multi-scale model's outputs: random images of the pyramid's sizes, finest first."""
    rng = np.random.default_rng(seed)
    shapes = [p.shape for p in numpy_pyramid(target, levels)]
    return [rng.uniform(size=s).astype(np.float32) for s in shapes]


@pytest.mark.parametrize("levels", [1, 2, 3])
def test_multiscale_mse_is_deepdeblur_eq_4(images, levels):
    """Eq. (4): 1/(2K) sum_k ||L_k - S_k||^2 / (c_k w_k h_k), a per-scale mean."""
    target = images[0]
    predictions = _predictions(target, levels)
    pyramid = numpy_pyramid(target, levels)
    expected = sum(((p - s) ** 2).mean() for p, s in zip(predictions, pyramid, strict=True))
    expected /= 2 * levels
    np.testing.assert_allclose(float(multiscale_mse(target, predictions)), expected, rtol=1e-5)


@pytest.mark.parametrize("levels", [1, 3])
def test_multiscale_l1_is_the_official_sum_of_per_scale_l1(images, levels):
    target = images[0]
    predictions = _predictions(target, levels)
    pyramid = numpy_pyramid(target, levels)
    expected = sum(np.abs(p - s).mean() for p, s in zip(predictions, pyramid, strict=True))
    np.testing.assert_allclose(float(multiscale_l1(target, predictions)), expected, rtol=1e-5)


def test_multiscale_loss_of_the_exact_pyramid_is_zero(images):
    target = images[0]
    pyramid = [p.astype(np.float32) for p in numpy_pyramid(target, 3)]
    assert float(multiscale_mse(target, pyramid)) == pytest.approx(0.0, abs=1e-10)
    assert float(multiscale_l1(target, pyramid)) == pytest.approx(0.0, abs=1e-5)


def test_deblur_loss_weights_terms_and_uses_the_finest_output(images):
    target, prediction = images
    coarse = _predictions(target, 3)[1:]
    d = prediction.astype(np.float64) - target
    loss = DeblurLoss({"l1": 2.0, "mse": 0.5, "multiscale_l1": 1.0, "charbonnier": 0.0})
    assert loss.terms == {"l1": 2.0, "mse": 0.5, "multiscale_l1": 1.0}  # zero weight dropped
    assert loss.multi_scale and loss.adversarial_weight == 0.0
    values = {k: float(v) for k, v in loss(target, [prediction, *coarse]).items()}
    assert values["l1"] == pytest.approx(2.0 * np.abs(d).mean(), rel=1e-6)
    assert values["mse"] == pytest.approx(0.5 * (d**2).mean(), rel=1e-6)
    expected = sum(
        np.abs(p - s).mean()
        for p, s in zip([prediction, *coarse], numpy_pyramid(target, 3), strict=True)
    )
    assert values["multiscale_l1"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="nosuch"):
        DeblurLoss({"nosuch": 1.0})


def test_perceptual_layer_is_configurable_and_checked(images, monkeypatch):
    """--vgg-layer picks phi; a name that is not a VGG-19 layer fails naming the flag. VGG
    is built without downloaded weights here (random weights: only the formula matters)."""
    import keras

    real_vgg19 = keras.applications.VGG19
    monkeypatch.setattr(
        keras.applications, "VGG19", lambda **kw: real_vgg19(**{**kw, "weights": None})
    )
    with pytest.raises(ValueError, match="--vgg-layer 'block9_conv9'.*block2_conv2"):
        DeblurLoss({"perceptual": 1.0}, perceptual_layer="block9_conv9")
    loss = DeblurLoss({"perceptual": 1.0}, perceptual_layer="block1_conv2")
    assert loss.perceptual.extractor.output.shape[-1] == 64  # block1_conv2 has 64 maps
    target, prediction = images
    mean_bgr = np.array([103.939, 116.779, 123.68], np.float32)

    def phi(x):
        return np.asarray(loss.perceptual.extractor(x[..., ::-1] * 255.0 - mean_bgr), np.float64)

    expected = 0.5 * ((phi(prediction) - phi(target)) ** 2).mean()  # 1/(2 N_c) ||.||_F^2
    value = float(loss(target, prediction)["perceptual"])
    assert value == pytest.approx(expected, rel=1e-4)
