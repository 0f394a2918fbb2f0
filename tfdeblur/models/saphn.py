"""SAPHN: spatially-attentive patch-hierarchical network (Suin, Purohit, Rajagopalan).

Reference:
    ``../shared/papers/saphn_patch_hierarchical_attentive.txt`` (refined version:
    "Spatially-Attentive Patch-Hierarchical Network for Adaptive Motion Deblurring",
    CVPR 2020), sec. 2 (architecture, Fig. 1), 2.1-2.2 (global-local module, eq. 1-8),
    3.1 (training). Base network: DMPHN, Zhang et al., CVPR 2019 (the 1-2-4 model of its
    public code shows the patch mechanics followed here).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras

from keras_layers import (
    CropToReference,
    GlobalAttention,
    GlobalLocalResBlock,
    MergePatches,
    PadToMultiple,
    SplitPatches,
)
from tfdeblur.models.recipes import augmentation, demo_recipe
from tfdeblur.models.registry import register_model

PAPER = {
    "widths": [32, 64, 128],
    "encoder_blocks": 2,
    "decoder_blocks": 2,
    "attention_maps": 128,
    "filter_size": 5,
    "meta_filters": None,
}

# Two scales keep the training graph small (its first trace dominates test time).
TINY = {
    **PAPER,
    "widths": [4, 8],
    "encoder_blocks": 1,
    "decoder_blocks": 1,
    "attention_maps": 4,
    "filter_size": 3,
}

# Sec. 3.1: "batch-size of 6 and patch-size of 256 x 256. Adam ... initial learning rate
# 1e-4, halved after every 2 x 10^5 iterations". Not stated, taken from DMPHN, which
# sec. 3.1 follows: the loss (MSE on the level-1 output), the length (DMPHN's 3000
# epochs of 2103 pairs at batch 6 = 1.05 M iterations, rounded to 1 M) and the data
# augmentation (none beyond the random crop). Validation (not in the paper): every 20
# epochs (about 7000 iterations) on 100 test frames spread over the test split, rather
# than all 1111 full 720p frames every epoch.
TRAIN_PAPER = {
    "batch_size": 6,
    "patch_size": 256,
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "lr_schedule": {"type": "step", "step_size": 200_000, "unit": "iterations", "factor": 0.5},
    "iterations": 1_000_000,
    "loss": {"mse": 1.0},
    "augment": augmentation(),
    "blur_key": "blur",
    "data": "images",
    "validate_every": 20,
    "max_val_images": 100,
}

# ``--data demo``: the paper's loss (MSE), 400 steps (SAPHN's steps are the slowest) in 2
# validated epochs.
TRAIN_DEMO = demo_recipe(TRAIN_PAPER, iterations=400, validations=2)


def _check_positive_int(name, value):
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")


@register_model(
    "saphn",
    presets={"paper": PAPER, "tiny": TINY},
    train_presets={"paper": TRAIN_PAPER, "demo": TRAIN_DEMO},
    description="SAPHN (CVPR 2020): 3-level patch hierarchy of global-local attentive "
    "encoder-decoders, 31.85 dB",
)
def saphn(
    widths: Sequence[int] = (32, 64, 128),
    encoder_blocks: int = 2,
    decoder_blocks: int = 2,
    attention_maps: int = 128,
    filter_size: int = 5,
    meta_filters: int | None = None,
    name: str = "saphn",
) -> keras.Model:
    """Build SAPHN (sec. 2, Fig. 1).

    Hierarchy (DMPHN 1-2-4 without stacking, sec. 2): three levels, each an
    encoder-decoder with its own weights; the image is centred (``x - 0.5``, as DMPHN).

    * Level 3 (bottom): the image cut into 4 non-overlapping quarters (top/bottom, then
      left/right halves). The encoder runs on each quarter; the quarters' features are
      stitched left-right into the two halves of level 2 and the decoder runs on each
      half, giving a residual image per half.
    * Level 2: the encoder runs on each half plus its level-3 residual; the halves'
      features are stitched top-bottom and fused with the stitched level-3 features;
      the decoder runs on the whole image, giving a residual image.
    * Level 1 (top): the encoder runs on the image plus the level-2 residual, its
      features are fused with level 2's, and the decoder's output (plus 0.5) is the
      result, unclamped. No cascade of several such networks ("we avoid cascading
      along depth").

    Encoder (N = ``len(widths)`` scales): ``conv3x3(3 -> w1)``, ``M`` residual blocks,
    then per further scale ``conv3x3 stride 2 -> w_s`` and ``M`` residual blocks.
    Decoder, mirrored: per scale from the deepest ``P`` residual blocks with cross
    attention to the encoder features of that scale, then ``deconv4x4 stride 2``;
    finally ``conv3x3(w1 -> 3)``. Residual block: ``x + conv(GL(ReLU(conv(x))))``
    (:class:`keras_layers.GlobalLocalResBlock`).

    Readings of the paper (Fig. 1 and the CVPR version's architecture figure did not
    survive; the text gives "N = 3, M = 2, and P = 2", "128 filters" and the 5x5 PDF):

    * N, M, P are the hyper-parameters "of our encoder-decoder backbone", read as the
      number of scales of each encoder-decoder (N = 3), residual blocks per encoder
      scale (M = 2) and residual blocks per decoder scale (P = 2). These are exactly the
      values of DMPHN's encoder-decoder, the stated base, whose widths 32/64/128 are
      kept (``widths``). The other reading of "all the convolutional layers within our
      proposed modules contain 128 filters" as 128 channels at every scale would make
      full-resolution blocks 16x costlier, at odds with the paper's 0.34 s at 720p.
    * "128 filters" is applied inside the global-local modules where a convolution's
      width is free: C2 = 128 attention maps (``f_p``, ``f_q``). The module's outputs
      keep the block's channels (eq. 8 sums branches with the input's C channels), and
      the kernel-generating "meta-layer" (sec. 2.2, singular) is one 3x3 convolution to
      the k*k = 25 kernel weights (``meta_filters=None``): the text describes no hidden
      layer, and this convolution's width is fixed by the kernel, not 128. A 128-wide
      hidden layer (``meta_filters=128``, the other reading) adds 3.53 M parameters and
      45% more computation (6,374 against 4,388 GFLOPs at 720p).
    * Every residual block, at every scale, contains a global-local module (sec. 2:
      "each of these residual blocks contains 1 convolution layer followed by a
      content-aware processing module and another convolutional layer"; the attention
      is "used throughout the network without the need of explicit downsampling").
    * Attention is global over what one encoder or decoder sees: a quarter in level 3's
      encoder, a half in its decoder and level 2's encoder, the image above.
    * Decoder cross-attention: the query is the decoder features, the key/value the
      encoder features of the same scale and level (stitched like the decoder's input).
    * Cross-level attention: DMPHN adds the lower level's features to the encoder
      output; here they are "adaptively fused using attention":
      ``f = f_enc + f_lower + CrossAtt(query=f_enc, source=f_lower)``. The addition is
      kept because the attention output is global (one mixture of C2 descriptors per
      pixel) and cannot carry the lower level's spatial detail by itself.
    * Upsampling is DMPHN's transposed convolution (4x4, stride 2); no activation after
      the strided and transposed convolutions, as in DMPHN.
    * Any H x W: the centred image is zero-padded at the bottom/right to a multiple of
      ``2 * 2**(N-1)`` (8: patch split, then the encoder's down-sampling) and the output
      cropped back. Padding after centring makes the padded pixels 0 in the network's
      value range (mid-grey in the image's), the value every convolution's 'same'
      padding assumes, rather than a -0.5 (black) border. The padded pixels are not
      masked: they take part in every spatial softmax over HW (eq. 1) and in M2's
      global pooling, and they move the quarter/half boundaries, so the output on an
      H x W image equals that of the padded image cropped. Sizes that are multiples of
      8, 1280x720 among them, are not padded.

    Size and cost of the paper preset: 14,020,173 parameters (56.1 MB float32; the paper
    does not state its size); 4,388 GFLOPs for a 1280x720 frame (TF profiler on the
    frozen graph, 2 x MACs; 2.38 M multiply-adds per input pixel; ``tfdeblur bench``,
    counting per TFLite operator, gives 4,368): 40% in the 5x5
    pixel-dependent filters, 28% in the residual blocks' 3x3 convolutions, 22% in the
    attentions, 6% in the meta-layers. This is not consistent with the paper's 0.34 s
    at 720p on a Titan Xp (12.1 TFLOPS float32 peak): 4.39 TFLOP take 0.36 s at 100% of
    the peak. No reading of the meta-layer removes the gap (a 1x1 one: 4,140 GFLOPs),
    and the widths 32/64/128 are already the cheapest reading of N, M, P and "128
    filters"; the paper does not say how it timed (precision, input size).

    Args:
        widths: channels of the N encoder scales. Default ``(32, 64, 128)``.
        encoder_blocks: M, residual blocks per encoder scale. Default 2.
        decoder_blocks: P, residual blocks per decoder scale. Default 2.
        attention_maps: C2 of every attention. Default 128.
        filter_size: odd k of the pixel-dependent filters. Default 5.
        meta_filters: int or None, hidden width of the kernel-generating meta-layers;
            None (the paper preset) makes each a single 3x3 convolution to the k*k
            kernel weights. Default None.
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, 3)`` in [0, 1] to ``(B, H, W, 3)``.
    """
    widths = [int(w) for w in widths]
    if not widths or min(widths) < 1:
        raise ValueError(f"widths must be a non-empty list of positive ints, got {widths!r}.")
    for arg, value in (
        ("encoder_blocks", encoder_blocks),
        ("decoder_blocks", decoder_blocks),
        ("attention_maps", attention_maps),
    ):
        _check_positive_int(arg, value)
    if meta_filters is not None:
        _check_positive_int("meta_filters", meta_filters)
    if not isinstance(filter_size, int) or filter_size < 1 or filter_size % 2 == 0:
        raise ValueError(f"filter_size must be a positive odd integer, got {filter_size!r}.")
    scales = len(widths)
    block_args = {
        "kernel_size": 3,
        "attention_maps": attention_maps,
        "filter_size": filter_size,
        "meta_filters": meta_filters,
    }

    def conv(filters, stride, name):
        return keras.layers.Conv2D(filters, 3, strides=stride, padding="same", name=name)

    def encoder(x, level):
        """Features of every scale, full resolution first."""
        features = []
        h = conv(widths[0], 1, f"l{level}_enc_in")(x)
        for s, width in enumerate(widths, start=1):
            if s > 1:
                h = conv(width, 2, f"l{level}_enc_down{s}")(h)
            for b in range(encoder_blocks):
                h = GlobalLocalResBlock(**block_args, name=f"l{level}_enc_s{s}_rb{b}")(h)
            features.append(h)
        return features

    def decoder(h, skips, level):
        for s in range(scales, 0, -1):
            for b in range(decoder_blocks):
                h = GlobalLocalResBlock(
                    **block_args, cross_attention=True, name=f"l{level}_dec_s{s}_rb{b}"
                )([h, skips[s - 1]])
            if s > 1:
                h = keras.layers.Conv2DTranspose(
                    widths[s - 2], 4, strides=2, padding="same", name=f"l{level}_dec_up{s}"
                )(h)
        return conv(3, 1, f"l{level}_dec_out")(h)

    def cross_level(current, lower, level):
        attended = GlobalAttention(attention_maps, name=f"l{level}_cross_level")([current, lower])
        return keras.layers.Add(name=f"l{level}_fuse")([current, lower, attended])

    inputs = keras.Input(shape=(None, None, 3), name="blurry")
    centred = keras.layers.Rescaling(1.0, offset=-0.5, name="center")(inputs)
    x1 = PadToMultiple(2 * 2 ** (scales - 1), name="pad")(centred)
    x2 = SplitPatches(1, name="split_h")(x1)  # (2B, H/2, W): top, bottom halves
    x3 = SplitPatches(2, name="split_w")(x2)  # (4B, H/2, W/2): quarters

    # Level 3: encoder on quarters, decoder on the halves stitched from them.
    e3 = encoder(x3, 3)
    e3 = [MergePatches(2, name=f"l3_stitch_w_s{s}")(f) for s, f in enumerate(e3, start=1)]
    r3 = decoder(e3[-1], e3, 3)

    # Level 2: encoder on halves (+ level-3 residual), decoder on the whole image.
    e2 = encoder(keras.layers.Add(name="l2_input")([x2, r3]), 2)
    e2 = [MergePatches(1, name=f"l2_stitch_h_s{s}")(f) for s, f in enumerate(e2, start=1)]
    lower3 = MergePatches(1, name="l3_stitch_h")(e3[-1])
    f2 = cross_level(e2[-1], lower3, 2)
    r2 = decoder(f2, e2, 2)

    # Level 1: whole image (+ level-2 residual); its decoder gives the result.
    e1 = encoder(keras.layers.Add(name="l1_input")([x1, r2]), 1)
    f1 = cross_level(e1[-1], f2, 1)
    y = decoder(f1, e1, 1)

    y = keras.layers.Rescaling(1.0, offset=0.5, name="uncenter")(y)
    outputs = CropToReference(name="crop")([y, inputs])
    return keras.Model(inputs, outputs, name=name)
