"""DeepDeblur: the multi-scale CNN of Nah, Kim and Lee (CVPR 2017), a.k.a. MS-CNN / MSResNet.

Built to load the weights of the authors' PyTorch code (``SeungjunNah/DeepDeblur-PyTorch``,
``src/model/MSResNet.py``) unchanged: see :func:`tfdeblur.models.weights.load_deepdeblur_torch`.

Reference:
    ``../shared/papers/deepdeblur_multiscale_cnn.txt``, sec. 3.1 (architecture, Fig. 3-4),
    sec. 3.2 (training, eq. 4 multi-scale content loss, adversarial loss, Table 1),
    sec. 4.1 / Table 2 (K = 1, 2, 3 scales).
"""

from __future__ import annotations

import keras

from keras_layers import CropToReference, GaussianPyramid, PixelShuffle, ResBlock
from tfdeblur.models.recipes import AUGMENTATIONS, augmentation, demo_recipe
from tfdeblur.models.registry import register_model

# Sec. 3.1: K = 3 scales, 40 convolutions per scale (1 + 19 ResBlocks x 2 + 1), 64 feature
# maps, 5x5 filters everywhere. 11,721,321 parameters.
PAPER = {
    "n_scales": 3,
    "n_resblocks": 19,
    "n_feats": 64,
    "kernel_size": 5,
    "multi_scale_outputs": False,
}

# Table 2's K = 1 and K = 2 models. Sec. 3.1: "The number of convolution layers at each
# scale level is determined so that total model should have 120 convolution layers", and
# sec. 4.1 finds K = 3 the fastest, which only holds if the total depth is kept at 120:
# K = 2 has 60 convolutions per scale (29 ResBlocks), K = 1 has 120 (59 ResBlocks).
K2 = {**PAPER, "n_scales": 2, "n_resblocks": 29}
K1 = {**PAPER, "n_scales": 1, "n_resblocks": 59}

TINY = {
    "n_scales": 3,
    "n_resblocks": 1,
    "n_feats": 8,
    "kernel_size": 3,
    "multi_scale_outputs": False,
}

# Sec. 3.2. Eq. 4 (lost in the text extraction; from the published paper):
#   L_cont = 1 / (2K) * sum_k 1 / (c_k w_k h_k) * ||L_k - S_k||^2,
# which is ``tfdeblur.train.losses.multiscale_mse`` (1/(2K) included) at weight 1, in the
# paper's [-0.5, 0.5] value range (the same differences as our [0, 1] range).
# "After 3e5 iterations, the learning rate is decreased to 1/10": read as one decay at
# 3e5 (the released Torch7 code has no schedule; decays were done by hand). Adam betas and
# epsilon from the released code's defaults (``code/opts.lua``). Augmentation: flips,
# 90-degree rotation, RGB permutation, saturation x U[0.5, 1.5], Gaussian noise on the
# blurry image with sigma ~ N(0, (2/255)^2). Blurry images with gamma correction
# ("blur_gamma"), sec. 2. The discriminator is Table 1's (adversarial weight 1e-4).
# Validation (not in the paper; both GOPRO presets): every 10 epochs on 100 test frames
# spread over the test split, rather than all 1111 full 720p frames every epoch.
TRAIN_PAPER = {
    "batch_size": 2,
    "patch_size": 256,
    "optimizer": "adam",
    "learning_rate": 5e-5,
    "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    "lr_schedule": {
        "type": "multistep",
        "milestones": [300000],
        "unit": "iterations",
        "factor": 0.1,
    },
    "iterations": 900000,
    "loss": {"multiscale_mse": 1.0, "adversarial": 1e-4},
    "augment": augmentation(*AUGMENTATIONS),
    "blur_key": "blur_gamma",
    "data": "images",
    "validate_every": 10,
    "max_val_images": 100,
}

# The official PyTorch recipe (``src/option.py``, ``src/template.py`` "gopro"): L1 per
# scale (``nn.L1Loss``, a mean) summed over scales, Adam(1e-4, betas 0.9/0.999, eps 1e-8),
# batch 16, 256x256 patches, lr x0.5 at epochs 500/750/900, 1000 epochs; an epoch is one
# random patch from each of the 2103 training pairs; same augmentation as the paper
# (``src/data/common.py``), ``blur_gamma``, validation: the paper recipe's. The official loss is in [0, 255] units, ours
# in [0, 1]: a constant factor of 255 that Adam's update ignores (up to epsilon).
TRAIN_OFFICIAL = {
    **{key: value for key, value in TRAIN_PAPER.items() if key != "iterations"},
    "batch_size": 16,
    "learning_rate": 1e-4,
    "lr_schedule": {
        "type": "multistep",
        "milestones": [500, 750, 900],
        "unit": "epochs",
        "factor": 0.5,
    },
    "epochs": 1000,
    "loss": {"multiscale_l1": 1.0},
}

# ``--data demo``: the official recipe (multi-scale L1, its augmentation, ``blur_gamma``)
# on the "tiny" model preset (K = 3 scales: the 64x64 patches are a multiple of
# 2^(K-1) = 4), 2000 steps (its steps are the cheapest) in 4 validated epochs.
TRAIN_DEMO = demo_recipe(TRAIN_OFFICIAL, iterations=2000, validations=4)

# The up-convolution of the official code (``conv_end``) is always 5x5, whatever
# ``kernel_size`` is; the paper uses 5x5 for every convolution.
UPCONV_KERNEL_SIZE = 5

# The official network works on pixel values in [0, 255] minus rgb_range / 2.
RGB_RANGE = 255.0
MEAN = RGB_RANGE / 2


@register_model(
    "deepdeblur",
    presets={"paper": PAPER, "k1": K1, "k2": K2, "tiny": TINY},
    train_presets={"paper": TRAIN_PAPER, "official": TRAIN_OFFICIAL, "demo": TRAIN_DEMO},
    description="DeepDeblur (CVPR 2017): multi-scale ResNet on a Gaussian pyramid, "
    "29.08 dB (paper) / 30.40 dB (official PyTorch weights)",
)
def deepdeblur(
    n_scales: int = 3,
    n_resblocks: int = 19,
    n_feats: int = 64,
    kernel_size: int = 5,
    multi_scale_outputs: bool = False,
    name: str = "deepdeblur",
) -> keras.Model:
    """Build DeepDeblur's multi-scale network (sec. 3.1, Fig. 4).

    Structure (input ``x`` in [0, 1], any H x W):

    * The Gaussian pyramid ``B_1 .. B_K`` of ``x`` is built inside the model exactly as
      the official data loader does (:class:`keras_layers.GaussianPyramid`, which equals
      ``skimage.transform.pyramid_gaussian(downscale=2)``), after edge-padding ``x`` at
      the bottom/right to a multiple of ``2 ** (K - 1)`` (the official demo loader's
      ``numpy.pad(mode="edge")``, not the zero padding of
      :class:`keras_layers.PadToMultiple`, so any-size outputs equal the official demo's).
    * Each level is mapped to the official network's units, ``255 * B_k - 127.5``, so
      official weights apply unchanged.
    * Scale k (coarsest first): ``conv(in -> n_feats) -> n_resblocks x ResBlock -> conv
      (n_feats -> 3)``, all ``kernel_size`` with zero "same" padding and bias; ResBlock is
      ``x + conv(relu(conv(x)))`` with no normalisation and nothing after the add
      (Fig. 3b). The coarsest scale takes its 3-channel blurry level; each finer scale
      takes its blurry level concatenated (blurry first) with the up-convolved coarser
      output: a 5x5 ``conv(3 -> 12)`` followed by pixel shuffle x2.
    * Outputs are mapped back, ``(L_k + 127.5) / 255``, unclamped. The finest is cropped
      to H x W.

    Readings: the model is the official PyTorch ``MSResNet`` (the paper's Torch7 model has
    the same layers); its default PyTorch initialisation (weights
    ``U(+-1/sqrt(fan_in))``) is used for kernels, biases start at zero.

    Args:
        n_scales: K, number of scales (1, 2 or 3 in Table 2). Default 3.
        n_resblocks: ResBlocks per scale. Default 19.
        n_feats: feature maps. Default 64.
        kernel_size: size of every convolution except the 5x5 up-convolution. Default 5.
        multi_scale_outputs: if True the model returns ``[L_1, ..., L_K]`` (finest first,
            each ``(B, h_k, w_k, 3)`` in [0, 1] units) for the multi-scale loss; the
            finest is cropped to H x W, coarser ones have size ``H' / 2**k`` where ``H'``
            is H rounded up to a multiple of ``2 ** (K - 1)`` (equal to the sharp
            pyramid's sizes for training patches that divide by ``2 ** (K - 1)``).
            Default False: the finest image only.
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, 3)`` to ``(B, H, W, 3)`` (or the
        list above).
    """
    for arg, value in (
        ("n_scales", n_scales),
        ("n_resblocks", n_resblocks),
        ("n_feats", n_feats),
        ("kernel_size", kernel_size),
    ):
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value < (0 if arg == "n_resblocks" else 1)
        ):
            kind = "non-negative" if arg == "n_resblocks" else "positive"
            raise ValueError(f"{arg} must be a {kind} integer, got {value!r}.")
    if kernel_size % 2 == 0:
        raise ValueError(
            f"kernel_size must be odd ('same' padding as the official code), got {kernel_size}."
        )

    def init():
        # PyTorch's default Conv2d init: kaiming_uniform(a=sqrt(5)) = U(+-1/sqrt(fan_in)).
        # A new instance per layer: one instance would draw the same values for every
        # same-shaped kernel (see keras_layers.initializers).
        return keras.initializers.VarianceScaling(1.0 / 3.0, mode="fan_in", distribution="uniform")

    def conv(filters, size, name):
        return keras.layers.Conv2D(
            filters, size, padding="same", kernel_initializer=init(), name=name
        )

    # Per-channel offsets (same value for R, G, B): tf2onnx's transpose optimiser fails on
    # an Add of a scalar constant after a convolution, and then skips the whole pass.
    to_official = {"scale": RGB_RANGE, "offset": [-MEAN] * 3}
    to_unit = {"scale": 1.0 / RGB_RANGE, "offset": [MEAN / RGB_RANGE] * 3}

    inputs = keras.Input(shape=(None, None, 3), name="blurry")
    pyramid = GaussianPyramid(n_scales, 2 ** (n_scales - 1), name="pyramid")(inputs)
    blurry = [
        keras.layers.Rescaling(**to_official, name=f"scale{s}_in")(level)
        for s, level in enumerate(pyramid)
    ]

    outputs = [None] * n_scales
    up = None
    for s in range(n_scales - 1, -1, -1):  # coarsest first; scale 0 is the finest
        x = blurry[s]
        if up is not None:
            x = keras.layers.Concatenate(name=f"scale{s}_concat")([x, up])
        x = conv(n_feats, kernel_size, f"scale{s}_conv_in")(x)
        for i in range(n_resblocks):
            x = ResBlock(kernel_size, "relu", kernel_initializer=init(), name=f"scale{s}_res{i}")(x)
        latent = conv(3, kernel_size, f"scale{s}_conv_out")(x)
        outputs[s] = keras.layers.Rescaling(**to_unit, name=f"scale{s}_out")(latent)
        if s > 0:
            up = conv(3 * 4, UPCONV_KERNEL_SIZE, f"scale{s}_upconv")(latent)
            up = PixelShuffle(2, name=f"scale{s}_shuffle")(up)

    outputs[0] = CropToReference(name="crop")([outputs[0], inputs])
    if multi_scale_outputs:
        return keras.Model(inputs, outputs, name=name)
    return keras.Model(inputs, outputs[0], name=name)
