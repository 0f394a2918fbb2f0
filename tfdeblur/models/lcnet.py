"""LCNet: encoder-decoder with local correlation blocks (Su, Yuan, Wang, ICASSP 2020).

Reference:
    ``../shared/papers/lcnet_local_correlation_block.txt``, sec. 2.1 (architecture),
    2.2 (LCBlock), 2.3 (pixel shuffle), 2.4 (loss), 3.1 (training).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_layers import CropToReference, LCBlock, PadToMultiple, PixelShuffle, ResBlock
from tfdeblur.models.registry import register_model

PAPER = {
    "widths": [18, 36, 72],
    "num_res_blocks": 3,
    "num_lc_blocks": 2,
    "squeeze_ratio": 2,
    "window_size": 5,
    "lc_method": "depthwise",
}

TINY = {**PAPER, "widths": [4, 8, 8], "num_res_blocks": 1, "num_lc_blocks": 1, "window_size": 3}

# Sec. 3.1. "epochs" are passes over the 2103 GOPRO training pairs, one random
# 200x200 crop of each per pass (the usual reading; the paper does not define it).
# Validation every 10 epochs on 100 test frames spread over the test split (a few percent
# of the training time) rather than all 1111 full 720p frames every epoch.
TRAIN_PAPER = {
    "batch_size": 32,
    "patch_size": 200,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": {"type": "step", "step_size": 500, "unit": "epochs", "factor": 0.1},
    "epochs": 1500,
    "loss": {"l1": 1.0, "perceptual": 0.1},
    "augment": {"flip": True, "rotate": False, "channel_shuffle": True},
    "blur_key": "blur",
    "validate_every": 10,
    "max_val_images": 100,
}


# The README's first command (``--data demo``, which picks this preset; ``--train-preset
# demo`` names it): the paper model, 1000 Adam steps on 64x64 patches of the 24 demo
# training pairs (rate / 10 after 800), in 5 epochs of 200 steps, each validated (a tenth
# of the run). The validation PSNR passes the blurry inputs' 25.83 dB after 300-400 steps
# and ends at 25.97 dB (2000 steps at a constant rate: 26.02 dB); 180 steps validated every
# 3 steps, the recipe before, spent three quarters of the run validating and ended at
# 25.72 dB, below its input.
TRAIN_DEMO = {
    "batch_size": 8,
    "patch_size": 64,
    "optimizer": "adam",
    "learning_rate": 1e-3,
    "lr_schedule": {"type": "multistep", "milestones": [800], "unit": "iterations", "factor": 0.1},
    "epochs": 5,
    "steps_per_epoch": 200,
    "validate_every": 1,
    "loss": {"l1": 1.0},
    "augment": {"flip": True, "rotate": True, "channel_shuffle": True},
    "blur_key": "blur",
}


@register_model(
    "lcnet",
    presets={"paper": PAPER, "tiny": TINY},
    train_presets={"paper": TRAIN_PAPER, "demo": TRAIN_DEMO},
    description="LCNet (ICASSP 2020): encoder-decoder with local correlation blocks, 28.69 dB",
)
def lcnet(
    widths: Sequence[int] = (18, 36, 72),
    num_res_blocks: int = 3,
    num_lc_blocks: int = 2,
    squeeze_ratio: int = 2,
    window_size: int = 5,
    lc_method: str = "depthwise",
    name: str = "lcnet",
) -> keras.Model:
    """Build LCNet (sec. 2.1, Fig. 1).

    Structure (input ``x`` in [0, 1], any H x W):

    * 3 EBlocks, each ``conv(3x3, stride 2) -> LeakyReLU -> num_res_blocks x ResBlock``,
      taking the image to 1/2, 1/4, 1/8 resolution ("down-sampling rate 0.5").
    * 3 DBlocks, each ``num_lc_blocks x LCBlock -> conv(3x3) -> PixelShuffle(2)``
      ("up-sampling rate 2"); the first two are followed by LeakyReLU and added to the
      encoder feature of the same resolution (skip connection); the last one's conv makes
      ``3 * 4`` channels so its pixel shuffle yields the full-resolution residual.
    * Output ``x + residual`` ("only residuals need to learn"), unclamped.

    Readings of the paper, whose Fig. 1 numbers did not survive extraction:

    * Widths. Not in the text. ``widths=(18, 36, 72)`` gives 700,968 parameters =
      2,803,872 bytes of float32 weights: 2.67 MiB (2^20 B), 2.80 MB (10^6 B). That
      is the paper's "2.7 MB" (Table 1) only if its MB is a MiB, which the paper does
      not say; in 10^6 B it is 3.8% above (SARN's tables, for comparison, use 10^6 B).
      Widths double at each down-sampling, as in every encoder-decoder the paper cites.
    * All three EBlocks down-sample: three DBlocks each up-sample by 2, so the encoder
      must reach 1/8 for the output to come back at full resolution.
    * Skip connections add (they keep each module's channel count, the "in channels, out
      channels" that Fig. 1 labels) rather than concatenate.
    * LeakyReLU(0.2) follows each EBlock conv and each inner DBlock's pixel shuffle; the
      last DBlock is linear (it produces the residual image).
    * LCBlock: squeeze ratio 2, 5x5 window (see :class:`keras_layers.LCBlock`).
    * Inputs are zero-padded at the bottom/right to a multiple of 8 inside the model and
      the output cropped back (:class:`keras_layers.PadToMultiple`).

    Args:
        widths: channels of the three encoder levels. Default ``(18, 36, 72)``.
        num_res_blocks: ResBlocks per EBlock. Default 3.
        num_lc_blocks: LCBlocks per DBlock. Default 2.
        squeeze_ratio: LCBlock channel squeeze. Default 2.
        window_size: LCBlock correlation window. Default 5.
        lc_method: LCBlock formulation, ``"depthwise"`` (default, the faster to train)
            or ``"windows"`` (the exporters switch to it), same numbers; the legacy
            ``"patches"`` / ``"slices"`` map to them (see :class:`keras_layers.LCBlock`).
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, 3)`` to ``(B, H, W, 3)``.
    """
    widths = [int(w) for w in widths]
    if len(widths) != 3 or min(widths) < 1:
        raise ValueError(f"widths must be three positive ints, got {widths!r}.")
    for w in widths:
        if w % squeeze_ratio:
            raise ValueError(
                f"every width must divide by squeeze_ratio={squeeze_ratio}, got {widths}."
            )
    init = "glorot_uniform"  # Xavier, sec. 3.1

    def conv(filters, stride, name):
        return keras.layers.Conv2D(
            filters, 3, strides=stride, padding="same", kernel_initializer=init, name=name
        )

    def lrelu(name):
        return keras.layers.LeakyReLU(negative_slope=0.2, name=name)

    inputs = keras.Input(shape=(None, None, 3), name="blurry")
    x = PadToMultiple(8, name="pad")(inputs)
    padded = x

    skips = []
    for level, width in enumerate(widths, start=1):
        x = conv(width, 2, f"enc{level}_conv")(x)
        x = lrelu(f"enc{level}_act")(x)
        for i in range(num_res_blocks):
            x = ResBlock(3, "leaky_relu", 0.2, init, name=f"enc{level}_res{i}")(x)
        skips.append(x)

    out_widths = [widths[1], widths[0], 3]
    for level, out_width in zip((3, 2, 1), out_widths, strict=True):
        for i in range(num_lc_blocks):
            x = LCBlock(squeeze_ratio, window_size, 3, lc_method, init, name=f"dec{level}_lc{i}")(x)
        x = conv(out_width * 4, 1, f"dec{level}_conv")(x)
        x = PixelShuffle(2, name=f"dec{level}_shuffle")(x)
        if level > 1:
            x = lrelu(f"dec{level}_act")(x)
            x = keras.layers.Add(name=f"dec{level}_skip")([x, skips[level - 2]])

    x = keras.layers.Add(name="residual")([padded, x])
    outputs = CropToReference(name="crop")([x, inputs])
    return keras.Model(inputs, outputs, name=name)
