"""The adversarial discriminator of DeepDeblur (Nah et al., CVPR 2017, Table 1).

Not a deblurring network, so not in the registry: the trainer builds it when a training
preset has an ``adversarial`` loss term.
"""

from __future__ import annotations

import keras

# Table 1: output channels of the nine 5x5 convolutions (the ninth is 4x4), then a 1x1
# "dense" layer to one logit. The table gives no strides; they are chosen so that a
# 256x256 patch (the paper's training patch) reaches 1x1: /2 at the first channel
# increase of each stage, /4 twice, and the 4x4 conv with stride 4 and no padding, as in
# DeepDeblur-PyTorch's discriminator (which has one more 5x5 conv than Table 1). The 4x4
# conv pads 'same', identical to 'valid' on the 4x4 map of a 256 patch and still defined
# on the smaller maps of small training patches.
_TABLE1 = [
    (32, 5, 2),
    (64, 5, 1),
    (64, 5, 2),
    (128, 5, 1),
    (128, 5, 4),
    (256, 5, 1),
    (256, 5, 4),
    (512, 5, 1),
]


def build_discriminator(width_scale: float = 1.0, name: str = "discriminator") -> keras.Model:
    """DeepDeblur's discriminator: LeakyReLU(0.2) after every convolution, bias-free
    convolutions, one logit per receptive field (averaged by the loss for inputs larger
    than 256x256).

    Args:
        width_scale: multiplies every width of Table 1 (tiny test configurations).
        name: model name.
    """
    inputs = keras.Input((None, None, 3), name="image")
    x = inputs
    for i, (filters, kernel, stride) in enumerate(_TABLE1):
        x = keras.layers.Conv2D(
            max(1, int(filters * width_scale)),
            kernel,
            strides=stride,
            padding="same",
            use_bias=False,
            name=f"conv{i + 1}",
        )(x)
        x = keras.layers.LeakyReLU(0.2, name=f"act{i + 1}")(x)
    x = keras.layers.Conv2D(
        max(1, int(512 * width_scale)), 4, strides=4, padding="same", use_bias=False, name="conv9"
    )(x)
    x = keras.layers.LeakyReLU(0.2, name="act9")(x)
    logits = keras.layers.Conv2D(1, 1, use_bias=False, name="dense")(x)
    return keras.Model(inputs, logits, name=name)
