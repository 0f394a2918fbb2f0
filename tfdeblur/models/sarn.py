"""SARN: spatially-adaptive residual networks for image and video deblurring.

Reference:
    Purohit, Rajagopalan, "Spatially-Adaptive Residual Networks for Efficient Image and
    Video Deblurring" (refined version: AAAI 2020),
    ``../shared/papers/sarn_spatially_adaptive_residual.txt``: sec. 2 and Fig. 1 (image
    network), sec. 2.1 and Fig. 2 (DRM), sec. 2.2 and eq. (7) (video network), Tables
    1-3 (sizes).

Sizes. The paper's "Size (MB)" is float32 weights in units of 10^6 bytes: it lists SRN
[50] at 28 MB, and SRN's layers (5x5 convolutions, 32/64/128 channels, 3 ResBlocks per
level, without its ConvLSTM) hold 6.88 M parameters = 27.5e6 bytes = 26.2 MiB, so
MB = 1e6 B fits and MiB does not. With the readings below (see :func:`sarn`) the presets come out
at (Table 3 / Table 2 in brackets)::

    preset          parameters   MB (1e6 B)
    drm0_sa          2,667,444   10.67   (10.7)   0 DRMs + SA
    drm3             2,721,337   10.89   (10.9)   3 DRMs
    drm6             2,783,599   11.13   (11.2)   6 DRMs
    paper            2,791,968   11.17   (11.2)   6 DRMs + SA
    literal          2,644,384   10.58   (11.2)   paper without the mid-level conv
    sarn_video       3,201,184   12.80   (12.4)
    video literal    3,828,000   15.31   (12.4)   128-channel ConvLSTM, no mid-level conv

The mid-level closing convolution and the ConvLSTM width are size fits (the paper gives
neither); the ``literal`` presets leave them as the text has them.

Training memory (float32; peak RSS of one forward + backward step on CPU, scaled linearly
in the batch; a GPU allocator adds fragmentation and cuDNN workspace): each DRM keeps for
the backward pass its deformable convolution's gathered bilinear corners and sampled
matrix, 24.7 kB per position of its 1/4-resolution input (see
:func:`keras_layers.deform_conv2d`), and adds about 45 kB per position while its own
backward runs::

    train preset               DRM positions   per DRM   6 DRMs    whole step
    image, 16 x 256x256           65,536       1.62 GB    9.7 GB   ~15.8 GB
    video, 8 x 10 x 128x128       81,920       2.02 GB   12.1 GB   ~17.4 GB

(whole step: 0.99 GB per 256x256 image and 2.17 GB per 10-frame 128x128 clip; with
ResBlocks in place of the DRMs 0.24 and 0.65 GB). Neither fits a 16 GB GPU reliably:
use a 24 GB GPU, ``--mixed-precision``, or ``--batch-size 8`` for images (~7.9 GB) and
``--batch-size 4`` for clips (~8.7 GB).
"""

from __future__ import annotations

from typing import Any

import keras

from keras_layers import (
    DRM,
    ConvLSTMCell2D,
    CropToReference,
    FrameRecurrence,
    PadToMultiple,
    ResBlock,
    SelfAttention2D,
)
from tfdeblur.models.recipes import augmentation, demo_recipe
from tfdeblur.models.registry import register_model

# The encoder halves the resolution twice; every H x W is padded to a multiple of 4
# inside the model and cropped back.
MULTIPLE = 4

PAPER = {
    "base_channels": 32,
    "num_res_blocks": 3,
    "num_mid_blocks": 6,
    "num_drms": 6,
    "use_attention": True,
    "attention_reduction": 8,
    "attention_pool": 4,
    "mid_conv": True,
}
# The paper read literally: no closing convolution at the mid-level (see :func:`sarn`).
LITERAL = {**PAPER, "mid_conv": False}

TINY = {
    "base_channels": 8,
    "num_res_blocks": 1,
    "num_mid_blocks": 2,
    "num_drms": 2,
    "use_attention": True,
    "attention_reduction": 4,
    "attention_pool": 2,
}

VIDEO_PAPER = {**PAPER, "lstm_filters": 64}
# Literal: no mid-level closing convolution, and a ConvLSTM at the width of the features
# f_i it takes (4n = 128), as eq. (7) puts it between NetE and NetD (see build_video_step).
VIDEO_LITERAL = {**LITERAL, "lstm_filters": 128}
VIDEO_TINY = {**TINY, "lstm_filters": 8}

# The extraction of the paper has no training section. Readings: SARN follows SRN [50]
# ("we build our network over a residual encoder-decoder structure ... adopted in SRN"),
# so its recipe is SRN's: Adam (0.9, 0.999, 1e-8), learning rate 1e-4, batch 16,
# 256x256 crops, Euclidean (MSE) loss to the sharp image, random flips, 2000 epochs of
# the 2103 GOPRO training pairs. SRN decays the rate polynomially (power 0.3); the schema
# has no polynomial schedule, and (1 - e/2000)^0.3 falls to 1/2 at e = 1800 and to 1/4 at
# e = 1980, so the rate halves at those two epochs. Validation (not in the paper): every
# 10 epochs on 100 test frames spread over the test split (the video recipe: the first
# 100 test clips), rather than all 1111 full 720p frames every epoch.
TRAIN_PAPER = {
    "batch_size": 16,
    "patch_size": 256,
    "optimizer": "adam",
    "learning_rate": 1e-4,
    "adam": {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8},
    "lr_schedule": {
        "type": "multistep",
        "milestones": [1800, 1980],
        "unit": "epochs",
        "factor": 0.5,
    },
    "epochs": 2000,
    "loss": {"mse": 1.0},
    "augment": augmentation("flip"),
    "blur_key": "blur",
    "data": "images",
    "validate_every": 10,
    "max_val_images": 100,
}

# Video (sec. 2.2, Table 2 on DVD [48]); the paper gives no recipe either. Readings: the
# image recipe's optimiser and loss; clips of 10 consecutive frames, so that 6 of them see
# real past estimates and real future frames (the first 2 and last 2 use replicated
# neighbours); 128x128 crops and batch 8 (about 17.4 GB per training step, see the module
# docstring: a 24 GB GPU, or batch 4 on a 16 GB one); 500 epochs
# of all clip windows (every start frame) of the training videos, the rate halving at
# 450 and 495 (the image schedule's 0.9 and 0.99 points).
TRAIN_VIDEO_PAPER = {
    **TRAIN_PAPER,
    "batch_size": 8,
    "patch_size": 128,
    "lr_schedule": {
        "type": "multistep",
        "milestones": [450, 495],
        "unit": "epochs",
        "factor": 0.5,
    },
    "epochs": 500,
    "data": "clips",
    "clip_length": 10,
}

# Tiny recipes for tests and smoke runs (e.g. ``--data demo``, whose test split has 3
# frames per sequence): a few small steps, the paper's optimiser and loss.
TRAIN_TINY = {
    **TRAIN_PAPER,
    "batch_size": 2,
    "patch_size": 32,
    "learning_rate": 1e-3,
    "lr_schedule": {"type": "constant"},
    "epochs": 1,
    "validate_every": 1,
    "max_val_images": None,
}
TRAIN_VIDEO_TINY = {**TRAIN_TINY, "data": "clips", "clip_length": 3}

# ``--data demo``. Images: 1000 steps in 5 validated epochs. Video: clips of 3 frames (each
# step unrolls 3 recurrences), batch 2, 600 steps in 3 epochs, validation on the 6 test clips.
TRAIN_DEMO = demo_recipe(TRAIN_PAPER, iterations=1000)
TRAIN_VIDEO_DEMO = demo_recipe(
    TRAIN_PAPER, iterations=600, validations=3, batch_size=2, data="clips", clip_length=3
)


def _net_config(**net):
    """The network keywords of :func:`sarn` (its defaults, the paper's, where left out),
    checked; what :func:`_net_e` takes. The video builders take them as ``**net``.

    Raises:
        TypeError: an unknown keyword.
        ValueError: a value out of range.
    """
    unknown = sorted(set(net) - set(PAPER))
    if unknown:
        raise TypeError(f"unknown SARN network keyword(s) {unknown}; known: {sorted(PAPER)}.")
    net = {**PAPER, **net}
    net["use_attention"], net["mid_conv"] = bool(net["use_attention"]), bool(net["mid_conv"])
    _validate(**net)
    return net


def _validate(base_channels, num_res_blocks, num_mid_blocks, num_drms, attention_reduction, **_):
    for name, value, low in (
        ("base_channels", base_channels, 1),
        ("num_res_blocks", num_res_blocks, 0),
        ("num_mid_blocks", num_mid_blocks, 0),
        ("num_drms", num_drms, 0),
    ):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}.")
    if num_drms > num_mid_blocks:
        raise ValueError(
            f"num_drms={num_drms} exceeds num_mid_blocks={num_mid_blocks}: DRMs replace "
            "mid-level ResBlocks; raise num_mid_blocks to add more."
        )
    if (4 * base_channels) % attention_reduction:
        raise ValueError(
            f"attention_reduction={attention_reduction} must divide the mid-level width "
            f"4 * base_channels = {4 * base_channels}."
        )


def _conv(filters, name, stride=1, activation="relu"):
    return keras.layers.Conv2D(
        filters, 3, strides=stride, padding="same", activation=activation, name=name
    )


def _net_e(x, base_channels, num_res_blocks, num_mid_blocks, num_drms, use_attention,
           attention_reduction, attention_pool, mid_conv=True):  # fmt: skip
    """Encoder and mid-level (the paper's NetE, eq. 7). Returns (features, skips)."""
    n = base_channels
    skips = []
    x = _conv(n, "enc1_conv")(x)
    for i in range(num_res_blocks):
        x = ResBlock(3, "relu", name=f"enc1_res{i}")(x)
    skips.append(x)
    x = _conv(2 * n, "enc2_conv", stride=2)(x)
    for i in range(num_res_blocks):
        x = ResBlock(3, "relu", name=f"enc2_res{i}")(x)
    skips.append(x)
    x = _conv(4 * n, "enc3_conv", stride=2)(x)

    encoded = x
    for i in range(num_mid_blocks - num_drms):
        x = ResBlock(3, "relu", name=f"mid_res{i}")(x)
    for i in range(num_drms):
        x = DRM(3, name=f"mid_drm{i}")(x)
    if use_attention:
        x = SelfAttention2D(attention_reduction, attention_pool, name="mid_attention")(x)
    if mid_conv:
        x = _conv(4 * n, "mid_conv", activation=None)(x)
        x = keras.layers.Add(name="mid_skip")([encoded, x])
    return x, skips


def _net_d(x, skips, base_channels, num_res_blocks):
    """Decoder (the paper's NetD): deconvolutions, skip additions, ResBlocks, output conv."""
    n = base_channels
    for level, width in ((2, 2 * n), (1, n)):
        x = keras.layers.Conv2DTranspose(
            width, 3, strides=2, padding="same", activation="relu", name=f"dec{level}_deconv"
        )(x)
        x = keras.layers.Add(name=f"dec{level}_skip")([x, skips[level - 1]])
        for i in range(num_res_blocks):
            x = ResBlock(3, "relu", name=f"dec{level}_res{i}")(x)
    return _conv(3, "out_conv", activation=None)(x)


@register_model(
    "sarn",
    presets={
        "paper": PAPER,
        "drm0_sa": {**PAPER, "num_drms": 0},
        "drm3": {**PAPER, "num_drms": 3, "use_attention": False},
        "drm6": {**PAPER, "use_attention": False},
        "literal": LITERAL,
        "tiny": TINY,
    },
    train_presets={"paper": TRAIN_PAPER, "tiny": TRAIN_TINY, "demo": TRAIN_DEMO},
    description="SARN (AAAI 2020): encoder-decoder with deformable residual modules and "
    "self-attention, 31.13 dB",
)
def sarn(
    base_channels: int = 32,
    num_res_blocks: int = 3,
    num_mid_blocks: int = 6,
    num_drms: int = 6,
    use_attention: bool = True,
    attention_reduction: int = 8,
    attention_pool: int = 4,
    mid_conv: bool = True,
    name: str = "sarn",
) -> keras.Model:
    """Build the SARN image network (sec. 2, Fig. 1).

    Structure (``n = base_channels``; every convolution 3x3, ReLU unless stated)::

        conv(n) -> R x ResBlock(n)                      -- skip 1          (encoder)
        conv(2n, stride 2) -> R x ResBlock(2n)          -- skip 2
        conv(4n, stride 2)                              -- e
        (M - D) x ResBlock(4n) -> D x DRM(4n) -> SA -> conv(4n, linear), + e   (mid-level)
        deconv(2n, stride 2), + skip 2 -> R x ResBlock(2n)                    (decoder)
        deconv(n, stride 2), + skip 1 -> R x ResBlock(n)
        conv(3, linear)

    Readings of the paper (Fig. 1 did not survive the extraction):

    * The encoder-decoder is SRN's [50] ("a residual encoder-decoder structure ...
      adopted in SRN") with SARN's stated changes: 3x3 filters only, no multi-scale
      input, no recurrent unit, ``n = 32`` channels doubling at each of the two
      stride-2 convolutions; 3 ResBlocks per level, ReLU, additive skips, and a last
      linear convolution that regresses the sharp image directly (sec. 2: networks
      that "directly regress to the sharp image"), no input-to-output skip.
    * Mid-level. "In our final network, 6 DRMs are present in the mid-level", and
      DRMs *replace* ResBlocks ("replacing normal Res-Blocks with DRMs is much more
      efficient"): the mid-level holds ``num_mid_blocks = 6`` residual modules at the
      lowest resolution (SRN's 3 + 3 ResBlocks at 4n), the last ``num_drms`` of them
      DRMs. Table 3's sizes confirm it: each DRM adds 0.083 MB over the ResBlock it
      replaces (its offset convolution), and the rows grow by 0.1 MB per DRM.
    * The DRMs and the SA operate "on the output of the encoder", DRMs first. The
      mid-level is closed EDSR-style by a linear 3x3 convolution and a long additive
      skip over it (the "residual" encoder-decoder). The paper names no such
      convolution: it is a size fit, not a reading. Without its 147,584 parameters the
      paper preset would be 10.58 MB, 5.6% under Table 3's 11.2 MB; with it 11.17 MB.
      The preset ``"literal"`` (``mid_conv=False``) is the paper as written: the SA
      output goes straight to the decoder (2,644,384 parameters, 10.58 MB).
    * SA module: SAGAN self-attention with keys/values max-pooled by
      ``attention_pool = 4`` so that it runs on a 1280x720 frame within a 16 GB GPU
      (:class:`keras_layers.SelfAttention2D` has the arithmetic).
    * The "deconvolution layers" are 3x3 stride-2 transposed convolutions (3x3 filters
      only, so not SRN's 4x4).
    * Inputs are zero-padded at the bottom/right to a multiple of 4 inside the model and
      the output cropped back.

    Args:
        base_channels: n, channels of the first feature map. Default 32.
        num_res_blocks: ResBlocks per encoder/decoder level. Default 3.
        num_mid_blocks: residual modules (ResBlocks or DRMs) at the mid-level. Default 6.
        num_drms: how many of them are DRMs (0-``num_mid_blocks``). Default 6.
        use_attention: include the SA module. Default True.
        attention_reduction: SA channel reduction. Default 8.
        attention_pool: SA key/value pooling. Default 4.
        mid_conv: close the mid-level with a linear conv and a skip over it (a size
            fit, see above). Default True.
        name: model name.

    Returns:
        A functional ``keras.Model`` mapping ``(B, H, W, 3)`` in [0, 1] to
        ``(B, H, W, 3)``, unclamped.
    """
    net = _net_config(
        base_channels=base_channels, num_res_blocks=num_res_blocks,
        num_mid_blocks=num_mid_blocks, num_drms=num_drms, use_attention=use_attention,
        attention_reduction=attention_reduction, attention_pool=attention_pool,
        mid_conv=mid_conv,
    )  # fmt: skip
    inputs = keras.Input(shape=(None, None, 3), name="blurry")
    x = PadToMultiple(MULTIPLE, name="pad")(inputs)
    x, skips = _net_e(x, **net)
    x = _net_d(x, skips, base_channels, num_res_blocks)
    outputs = CropToReference(name="crop")([x, inputs])
    return keras.Model(inputs, outputs, name=name)


def build_video_step(
    lstm_filters: int = 64, name: str = "sarn_video_step", **net: Any
) -> keras.Model:
    """One time step of the SARN video network, eq. (7), as a functional model.

    Inputs ``[frames, h, c]``: ``frames`` is ``(B, H, W, 15)``, the channel concatenation
    ``[I_{i-2}, I_{i-1}, B_i, B_{i+1}, B_{i+2}]`` (sec. 2.2: "5 frames at each time-step
    (early fusion), of which 2 frames are deblurred estimates from past and 2 are
    blurred frames from future"); ``h``, ``c`` are the ConvLSTM state,
    ``(B, ceil(H/4), ceil(W/4), lstm_filters)``. Outputs ``[I_i, h_i, c_i]``.

    ``f_i = NetE(frames)`` (encoder + mid-level of :func:`sarn` with a 15-channel first
    convolution), ``h_i, c_i = ConvLSTM(f_i, h_{i-1}, c_{i-1})``, ``g_i = h_i``,
    ``I_i = NetD(g_i)``. The encoder skips feed NetD as in the image network (eq. 7
    writes NetD(g_i) only; the skips are part of the encoder-decoder it extends).

    The ConvLSTM width is a size fit, not a reading: the paper gives none. It has 3x3
    kernels and ``2n = 64`` channels, chosen for Table 2's size. Table 2 puts the
    recurrent network at 12.4 MB against 11.2 MB for the same network without
    recurrence ("Ours-Multi"): 1.2 MB = 0.3 M parameters for the ConvLSTM. One at the
    mid-level width (128) would cost 1.18 M (4.7 MB, 15.9 MB in total); with
    ``2n = 64`` channels it costs 0.44 M and NetD's first deconvolution (which now reads
    64 channels) shrinks by 37 K: 12.80 MB in total (+3.2%). 64 keeps the widths on the
    paper's n / 2n / 4n ladder; 48 channels would give 12.21 MB (-1.5%), 32 channels
    11.70 MB (-5.7%). The preset ``"literal"`` is eq. (7) as written: a ConvLSTM at the
    width of the ``f_i`` it takes (4n = 128) and no mid-level closing convolution (see
    :func:`sarn`): 3,828,000 parameters, 15.31 MB.

    Args:
        lstm_filters: channels of the ConvLSTM state. Default 64.
        name: model name.
        **net: the network's keywords, as :func:`sarn` takes them (``base_channels``,
            ``num_res_blocks``, ``num_mid_blocks``, ``num_drms``, ``use_attention``,
            ``attention_reduction``, ``attention_pool``, ``mid_conv``) with its defaults.

    Returns:
        A functional ``keras.Model`` ``[frames, h, c] -> [estimate, h, c]``.
    """
    net = _net_config(**net)
    if not isinstance(lstm_filters, int) or lstm_filters < 1:
        raise ValueError(f"lstm_filters must be a positive integer, got {lstm_filters!r}.")
    frames = keras.Input(shape=(None, None, 15), name="frames")
    h = keras.Input(shape=(None, None, lstm_filters), name="h")
    c = keras.Input(shape=(None, None, lstm_filters), name="c")
    x = PadToMultiple(MULTIPLE, name="pad")(frames)
    x, skips = _net_e(x, **net)
    h_new, c_new = ConvLSTMCell2D(lstm_filters, 3, name="conv_lstm")([x, h, c])
    x = _net_d(h_new, skips, net["base_channels"], net["num_res_blocks"])
    estimate = CropToReference(name="crop")([x, frames])
    return keras.Model([frames, h, c], [estimate, h_new, c_new], name=name)


@register_model(
    "sarn_video",
    presets={"paper": VIDEO_PAPER, "literal": VIDEO_LITERAL, "tiny": VIDEO_TINY},
    train_presets={
        "paper": TRAIN_VIDEO_PAPER,
        "tiny": TRAIN_VIDEO_TINY,
        "demo": TRAIN_VIDEO_DEMO,
    },
    description="SARN video (AAAI 2020): 5-frame early fusion, ConvLSTM and frame-level "
    "recurrence, 31.15 dB on DVD",
)
def sarn_video(lstm_filters: int = 64, name: str = "sarn_video", **net: Any) -> keras.Model:
    """Build the SARN video network over clips (sec. 2.2, eq. 7).

    A functional model mapping a blurry clip ``(B, T, H, W, 3)`` (any T, H, W) to the
    deblurred clip ``(B, T, H, W, 3)``: :class:`keras_layers.FrameRecurrence` (layer
    ``"recurrence"``) runs the step network of :func:`build_video_step` (its
    ``step_model``, shared weights) over the clip. Recurrence at feature level (the
    ConvLSTM state) and at frame level (the 2 previous estimates fed back), the 2 next
    blurry frames as look-ahead.

    Readings of the paper: at the clip's start the missing past estimates are the first
    blurry frame and the ConvLSTM state is zero; at its end the missing future frames
    repeat the last blurry frame; estimates are fed back unclamped with their gradients
    (see :class:`keras_layers.FrameRecurrence`). Streaming inference over a video
    (:mod:`tfdeblur.infer.video`) calls the step network with the same rules and gives the
    same numbers.

    Args: as :func:`build_video_step`.
    """
    step = build_video_step(lstm_filters, name="step", **net)
    clips = keras.Input(shape=(None, None, None, 3), name="blurry_clip")
    outputs = FrameRecurrence(step, 2, 2, MULTIPLE, name="recurrence")(clips)
    return keras.Model(clips, outputs, name=name)
