"""Training losses, combined from a ``{term: weight}`` dict of a training preset.

Terms:

* ``l1``: mean absolute error (LCNet eq. 6).
* ``mse``: mean squared error.
* ``charbonnier``: ``mean(sqrt((x - y)^2 + eps^2))``, eps = 1e-3.
* ``perceptual``: ``1 / (2 N_c) ||phi(L) - phi(S)||_F^2`` on a VGG-19 feature map
  (LCNet eq. 7; the layer defaults to ``block3_conv3``, "conv3_3" as in DeblurGAN,
  LCNet's ref. [15] for this loss).
* ``multiscale_mse``: DeepDeblur eq. (4), ``1/(2K) sum_k ||L_k - S_k||^2 / (c_k w_k h_k)``
  over the K outputs of a multi-scale model against the Gaussian pyramid of the target.
* ``multiscale_l1``: DeepDeblur-PyTorch's training loss, the sum over scales of the
  per-scale mean absolute error.
* ``adversarial``: DeepDeblur sec. 3.3, ``-log D(G(B))`` for the generator (the
  non-saturating form, binary cross-entropy on logits against "sharp"), with the
  discriminator of Table 1 trained jointly on ``log D(S) + log(1 - D(G(B)))``. The
  trainer computes this term (it needs the discriminator); it is listed here so presets
  validate.

Every term is a mean over the replica's batch; the trainer divides by the number of
replicas before taking gradients (``tf.nn.compute_average_loss`` semantics).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import keras
import tensorflow as tf

PIXEL_TERMS = ("l1", "mse", "charbonnier")
MULTISCALE_TERMS = ("multiscale_mse", "multiscale_l1")
KNOWN_TERMS = PIXEL_TERMS + MULTISCALE_TERMS + ("perceptual", "adversarial")
#: VGG-19 layer of the perceptual term unless a preset or ``--vgg-layer`` names another.
DEFAULT_PERCEPTUAL_LAYER = "block3_conv3"

VGG19_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg19/"
    "vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5"
)


def l1(target, prediction):
    """Mean absolute error ``mean(|x - y|)`` over every pixel and channel (LCNet eq. 6)."""
    return tf.reduce_mean(tf.abs(prediction - target))


def mse(target, prediction):
    """Mean squared error ``mean((x - y)^2)`` over every pixel and channel."""
    return tf.reduce_mean(tf.square(prediction - target))


def charbonnier(target, prediction, epsilon: float = 1e-3):
    """Charbonnier loss ``mean(sqrt((x - y)^2 + eps^2))``, a differentiable L1."""
    return tf.reduce_mean(tf.sqrt(tf.square(prediction - target) + epsilon**2))


def target_pyramid(target, levels: int):
    """The Gaussian pyramid ``[finest, ..., coarsest]`` a multi-scale model is trained on
    (the same pyramid DeepDeblur builds from its blurry input)."""
    from keras_layers.gaussian_pyramid import gaussian_pyramid

    return gaussian_pyramid(target, levels)


def multiscale_mse(target, predictions):
    """DeepDeblur eq. (4): ``1/(2K) sum_k mean((L_k - S_k)^2)``; predictions finest first."""
    targets = target_pyramid(target, len(predictions))
    per_scale = [mse(t, p) for t, p in zip(targets, predictions, strict=True)]
    return tf.add_n(per_scale) / (2.0 * len(per_scale))


def multiscale_l1(target, predictions):
    """DeepDeblur-PyTorch: sum over scales of the per-scale L1; predictions finest first."""
    targets = target_pyramid(target, len(predictions))
    return tf.add_n([l1(t, p) for t, p in zip(targets, predictions, strict=True)])


class VGGWeightsUnavailable(OSError):
    """The ImageNet VGG-19 weights are neither cached nor downloadable."""


class PerceptualLoss:
    """VGG-19 feature loss, LCNet eq. (7): ``1/(2 N_c) ||phi(L) - phi(S)||_F^2``.

    Images in [0, 1] are mapped to VGG's input (x255, RGB->BGR, ImageNet mean removed).
    The VGG network is frozen. Build it inside the strategy scope.

    Args:
        layer: VGG-19 layer name giving phi (``--vgg-layer``). Default ``"block3_conv3"``.
        weights: ``"imagenet"`` (Keras' cache, downloaded on first use) or the path of a
            local ``vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5``.

    Raises:
        FileNotFoundError: a local weights path that does not exist.
        ValueError: ``layer`` is not a layer of VGG-19 (names the convolution layers).
        VGGWeightsUnavailable: the ImageNet weights are neither cached nor downloadable;
            the message says how to proceed.
    """

    def __init__(self, layer: str = DEFAULT_PERCEPTUAL_LAYER, weights: str = "imagenet"):
        if weights != "imagenet" and not os.path.isfile(weights):
            raise FileNotFoundError(f"VGG-19 weights file not found: {weights}")
        try:
            vgg = keras.applications.VGG19(include_top=False, weights=weights)
        except Exception as err:  # keras raises a bare Exception on URL failures
            raise VGGWeightsUnavailable(
                "Could not load the VGG-19 ImageNet weights for the perceptual loss "
                f"({err}). Download {VGG19_WEIGHTS_URL} on a connected machine and pass "
                "it with --vgg-weights FILE (or copy it to ~/.keras/models/), or train "
                "without the perceptual term by naming the loss, e.g. --loss l1=1."
            ) from err
        vgg.trainable = False
        names = [lay.name for lay in vgg.layers]
        if layer not in names:
            convs = ", ".join(n for n in names if "_conv" in n)
            raise ValueError(f"--vgg-layer {layer!r} is not a VGG-19 layer; choose one of {convs}.")
        self.layer = layer
        self.extractor = keras.Model(vgg.input, vgg.get_layer(layer).output, name="vgg19_features")
        self.extractor.trainable = False

    def __call__(self, target, prediction):
        mean_bgr = tf.constant([103.939, 116.779, 123.68], dtype=tf.float32)

        def features(image):
            bgr = tf.reverse(tf.cast(image, tf.float32), axis=[-1]) * 255.0 - mean_bgr
            return tf.cast(self.extractor(bgr, training=False), tf.float32)

        return 0.5 * tf.reduce_mean(tf.square(features(prediction) - features(target)))


class DeblurLoss:
    """Weighted sum of loss terms, from a training preset's ``loss`` dict.

    Args:
        terms: ``{term: weight}``, terms from :data:`KNOWN_TERMS`.
        perceptual_layer: VGG-19 layer of the perceptual term.
        vgg_weights: ``"imagenet"`` or a local weights file.

    A perceptual term whose VGG-19 weights cannot be loaded is an error
    (:class:`VGGWeightsUnavailable`, naming ``--vgg-weights FILE`` and ``--loss l1=1``),
    never a silent change of the recipe: :attr:`terms` is the loss that trains.

    Calling it with ``(target, prediction)`` returns ``{term: weighted value}``; the
    trainer sums them. ``prediction`` is a list ``[finest, ..., coarsest]`` for the
    multi-scale terms; single-scale terms use its first (finest) element.
    """

    def __init__(
        self,
        terms: Mapping[str, float],
        perceptual_layer: str = DEFAULT_PERCEPTUAL_LAYER,
        vgg_weights: str = "imagenet",
    ):
        unknown = sorted(set(terms) - set(KNOWN_TERMS))
        if unknown:
            raise ValueError(f"Unknown loss term(s) {unknown}. Known terms: {list(KNOWN_TERMS)}.")
        if not terms:
            raise ValueError("The loss needs at least one term.")
        self.terms = {name: float(weight) for name, weight in terms.items() if weight}
        self.perceptual = None
        if "perceptual" in self.terms:
            self.perceptual = PerceptualLoss(perceptual_layer, vgg_weights)
        if not self.terms:
            raise ValueError("No loss term is left to train with.")

    @property
    def multi_scale(self) -> bool:
        """True when a term needs the model's multi-scale outputs."""
        return any(name in MULTISCALE_TERMS for name in self.terms)

    def __call__(self, target, prediction) -> dict[str, tf.Tensor]:
        outputs = list(prediction) if isinstance(prediction, (list, tuple)) else [prediction]
        outputs = [tf.cast(p, tf.float32) for p in outputs]
        target = tf.cast(target, tf.float32)
        functions = {
            "l1": lambda: l1(target, outputs[0]),
            "mse": lambda: mse(target, outputs[0]),
            "charbonnier": lambda: charbonnier(target, outputs[0]),
            "perceptual": lambda: self.perceptual(target, outputs[0]),
            "multiscale_mse": lambda: multiscale_mse(target, outputs),
            "multiscale_l1": lambda: multiscale_l1(target, outputs),
        }
        return {
            name: weight * functions[name]()
            for name, weight in self.terms.items()
            if name != "adversarial"
        }

    @property
    def adversarial_weight(self) -> float:
        """Weight of the adversarial term (0 when the preset has none)."""
        return self.terms.get("adversarial", 0.0)


def bce_with_logits(logits, label: float):
    """Mean binary cross-entropy of logits against a constant label (0 or 1)."""
    logits = tf.cast(logits, tf.float32)
    labels = tf.fill(tf.shape(logits), label)
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits))
