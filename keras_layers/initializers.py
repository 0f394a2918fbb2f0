"""One initializer instance per weight.

A Keras 3 random initializer draws the same values on every call of one instance: a seeded
one by design, an unseeded one because it picks its seed once, when it is constructed. A
layer that hands its ``kernel_initializer`` instance to several convolutions (the two of a
ResBlock, LCBlock's content and pattern convolutions, an attention's projections) would
therefore start them with identical kernels, and a model builder that passes one instance
to every layer would start every same-shaped kernel of the network identical. Every layer
of :mod:`keras_layers` passes :func:`fresh_initializer` of its initializer wherever a
weight is made; :func:`sublayer_conv` makes their convolutions so.
"""

from __future__ import annotations

import keras


def fresh_initializer(initializer):
    """A new instance of ``initializer`` (an instance, a name or a config).

    An unseeded random initializer gets a seed of its own, so each weight made with the
    result draws its own values. A seeded one keeps its seed (Keras' semantics: the same
    seed gives the same values).
    """
    initializer = keras.initializers.get(initializer)
    return initializer.__class__.from_config(initializer.get_config())


def sublayer_conv(layer, filters, kernel_size, name, initializer=None, **options):
    """A ``Conv2D`` sublayer of ``layer``, with a fresh instance of its initializer.

    ``initializer`` defaults to ``layer.kernel_initializer``; the convolution takes the
    dtype policy of ``layer``. ``options`` are ``Conv2D``'s other arguments (padding,
    activation, bias). The caller builds it.
    """
    if initializer is None:
        initializer = layer.kernel_initializer
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        kernel_initializer=fresh_initializer(initializer),
        dtype=layer.dtype_policy,
        name=name,
        **options,
    )
