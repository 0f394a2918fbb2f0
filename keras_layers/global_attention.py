"""Global attention branch of SAPHN's global-local module, eq. (1)-(6), self and cross.

Reference:
    Suin, Purohit, Rajagopalan, "Spatially-Attentive Patch-Hierarchical Network for
    Adaptive Motion Deblurring", CVPR 2020 (``../shared/papers/saphn_patch_hierarchical_attentive.txt``),
    sec. 2.1 (eq. 1-6) and 2.2 (self-attention in encoders, self- and cross-attention in
    decoders).

The branch is a gather-distribute attention (like the double attention of A^2-Nets):
``C2`` spatial softmax maps gather ``C2`` global descriptors of the features (eq. 1-2),
a channel gate re-weights them (eq. 3-4), and every pixel picks among them with its own
softmax over ``C2`` (eq. 5-6). Cost and memory are linear in ``HW`` (no ``HW x HW``
affinity).
"""

from __future__ import annotations

import keras
from keras import ops

from keras_layers.initializers import sublayer_conv


def _flatten(features):
    """``(B, H, W, C)`` -> ``(B, HW, C)`` with dynamic H, W (static C kept when known).

    With B and C known (an exported TFLite graph has batch 1) the target shape is a
    constant ``[B, -1, C]``: no shape arithmetic in the graph, which keeps the XNNPACK
    delegate on the surrounding operators of an any-size file.
    """
    batch, channels = features.shape[0], features.shape[-1]
    if batch is not None and channels is not None:
        return ops.reshape(features, (batch, -1, channels))
    shape = ops.shape(features)
    channels = channels if channels is not None else shape[3]
    return ops.reshape(features, (shape[0], -1, channels))


def spatial_softmax(logits):
    """Eq. (1)'s normalisation: each of the ``C2`` maps ``q_k`` is a softmax over HW.

    Args:
        logits: ``(B, H, W, C2)`` output of ``f_q``.

    Returns:
        ``(B, C2, HW)`` weights; ``sum_i q_k[i] = 1`` for every k.
    """
    logits = ops.convert_to_tensor(logits)
    return ops.softmax(ops.transpose(_flatten(logits), [0, 2, 1]), axis=-1)


def gather_descriptors(weights, values):
    """Eq. (1)-(2): ``xbar^k = GSP_HW(q_k * x)``, the C2 attention-weighted sums of x.

    Args:
        weights: ``(B, C2, HW)`` spatial attention maps (from :func:`spatial_softmax`).
        values: ``(B, H, W, C)`` features x whose ``H * W`` equals the weights' HW.

    Returns:
        ``(B, C2, C)`` descriptors, row k = ``sum_i q_k[i] x_i``.
    """
    values = ops.convert_to_tensor(values)
    return ops.matmul(weights, _flatten(values))


def distribute(selection_logits, descriptors):
    """Eq. (5)-(6): per-pixel softmax ``p_j`` over C2, then GAP over C2.

    ``ybar^j = GAP_C2(p_j * xbar) = (1 / C2) sum_k p_j[k] xbar^k``. The average (not the
    sum) is what eq. (6) says. No later convolution can absorb the constant ``1 / C2``
    (the residual block's convolution acts on the sum of this branch and the local one);
    :class:`GlobalAttention` compensates it in the initial value of ``M2`` instead.

    Args:
        selection_logits: ``(B, H, W, C2)`` output of ``f_p`` (H, W of the output).
        descriptors: ``(B, C2, C)`` re-weighted descriptors ``xbar_{m1 m2}``.

    Returns:
        ``(B, H, W, C)`` per-pixel global features.
    """
    selection_logits = ops.convert_to_tensor(selection_logits)
    descriptors = ops.convert_to_tensor(descriptors, dtype=selection_logits.dtype)
    maps = selection_logits.shape[-1]
    if maps is None or descriptors.shape[1] not in (None, maps):
        raise ValueError(
            f"selection_logits must have a known channel count C2 equal to the number of "
            f"descriptors, got shapes {selection_logits.shape} and {descriptors.shape}."
        )
    # On the 4-D maps, (B, H, W, C2) @ (B, 1, C2, C) with the batch dims broadcast: no
    # flatten and no reshape back to a computed (B, H, W, C).
    p = ops.softmax(selection_logits, axis=-1)
    return ops.matmul(p, descriptors[:, None]) / maps


def global_attention(selection_logits, gather_logits, values, channel_weights):
    """The global branch, eq. (1)-(6), on precomputed ``P``, ``Q``, x and ``M2``.

    ``y_j = (1/C2) sum_k softmax_k(P_j)[k] * M2 * sum_i softmax_i(Q_k)[i] x_i``.

    Self-attention: all four come from the same features. Cross-attention: ``P`` from
    the query features (its H, W are the output's), ``Q``, x and ``M2`` from the source
    features, whose H, W may differ (the descriptors are global).

    Args:
        selection_logits: ``(B, H, W, C2)`` ``P`` logits (per-pixel selection, query).
        gather_logits: ``(B, Hs, Ws, C2)`` ``Q`` logits (spatial maps, key).
        values: ``(B, Hs, Ws, C)`` features x that are gathered (value).
        channel_weights: ``(B, C)`` ``M2``.

    Returns:
        ``(B, H, W, C)`` tensor.

    Raises:
        ValueError: if ``P`` and ``Q`` disagree on C2 or ``M2`` on C.
    """
    selection_logits = ops.convert_to_tensor(selection_logits)
    gather_logits = ops.convert_to_tensor(gather_logits, dtype=selection_logits.dtype)
    values = ops.convert_to_tensor(values, dtype=selection_logits.dtype)
    channel_weights = ops.convert_to_tensor(channel_weights, dtype=selection_logits.dtype)
    if selection_logits.shape[-1] != gather_logits.shape[-1]:
        raise ValueError(
            f"selection_logits (P) and gather_logits (Q) need the same C2, got shapes "
            f"{selection_logits.shape} and {gather_logits.shape}."
        )
    if len(channel_weights.shape) != 2 or channel_weights.shape[-1] != values.shape[-1]:
        raise ValueError(
            f"channel_weights (M2) must have shape (B, C) with C = values' channels, got "
            f"{channel_weights.shape} for values of shape {values.shape}."
        )
    dtype = selection_logits.dtype
    if keras.backend.standardize_dtype(dtype) in ("float16", "bfloat16"):
        # Softmax over HW of a 720p image yields weights ~1e-6: keep them in float32.
        selection_logits, gather_logits, values, channel_weights = (
            ops.cast(t, "float32")
            for t in (selection_logits, gather_logits, values, channel_weights)
        )
    descriptors = gather_descriptors(spatial_softmax(gather_logits), values)  # eq. 1-2
    descriptors = descriptors * channel_weights[:, None, :]  # eq. 3
    return ops.cast(distribute(selection_logits, descriptors), dtype)  # eq. 5-6


@keras.saving.register_keras_serializable(package="tfdeblur")
class GlobalAttention(keras.layers.Layer):
    """SAPHN's global attention (sec. 2.1, eq. 1-6): self-attention or cross-attention.

    Called on one tensor ``x`` it is self-attention (encoders and decoders). Called on
    ``[query, source]`` it is cross-attention (decoders, and the cross-level fusion of
    the multi-patch hierarchy): the per-pixel selection ``P = f_p(query)`` comes from the
    query, i.e. the decoder (or upper-level) features whose pixels receive the output;
    the spatial maps ``Q = f_q(source)``, the gathered features x = source and the
    channel gate ``M2`` come from the source, i.e. the encoder (or lower-level)
    features. The output has the query's H, W and the source's channels.

    Readings of the paper:

    * ``f_p``, ``f_q``, ``f_M2`` are 1x1 convolutions with bias (the paper says only
      "convolutional operations"); ``f_p`` and ``f_q`` make ``C2 = attention_maps``
      maps, 128 in the paper ("all the convolutional layers within our proposed modules
      contain 128 filters", sec. 3.1).
    * ``M2 = GAP(f_M2(x))`` ("global-average-pooling is used for the last case") with C
      outputs and no activation: the text names none, and a gate bounded in (0, 1)
      would cap the branch at ``|x| / C2`` after eq. (6)'s average. Since ``f_M2`` is a
      1x1 convolution it is applied to the pooled features (same numbers, HW times
      cheaper). Eq. (4)'s ``M2 = f_m2(xbar_m1)`` (a function of the descriptors) is read
      as this, the sentence above it being explicit.
    * Initialisation (the paper gives none): ``f_M2``'s bias starts at ``C2``. Since
      ``p_j`` and every ``q_k`` sum to 1, ``sum_k p_j[k] xbar^k`` is an average of x, and
      eq. (6)'s ``1 / C2`` would start the branch ``C2`` times weaker still; with a zero
      bias ``M2`` is also a small random gate (~0.4 x |GAP(x)|), and the branch started
      ~500x weaker than the local one (RMS 0.0012 vs 0.65 on ReLU features of RMS 0.69,
      C2 = 128), so eq. (8)'s sum began as the local branch alone. With ``M2 ~ C2`` the
      branch starts at the magnitude of ``GAP(x)`` (RMS 0.39 there), eq. (6) unchanged.
    * The features multiplied by the maps, ``x_m1`` of eq. (1), are the input x itself
      (no value projection: the text introduces only ``f_p``, ``f_q``, ``f_M2``).
    * The index ``k = 1..N`` of eq. (1)-(2) runs over the ``C2`` maps (N = C2).

    Full-integer (int8) TFLite cannot hold the branch: the int8 softmax has a fixed
    output scale of 1/256, and the spatial weights of eq. (1) are ~1/HW each (0 or 1/256
    once rounded). Float32, float16 and dynamic-range exports compute it in float.

    Memory: the ``(B, C2, HW)`` softmax maps dominate. At 1280x720, C2 = 128, float32,
    one image: ``P`` and ``Q`` are 472 MB each at full resolution (plus a transposed
    copy of ``Q``), 118 MB at 1/2 and 29.5 MB at 1/4 resolution.

    Args:
        attention_maps: int, C2. Default 128.
        kernel_initializer: initializer of the three convolutions. Default
            ``"glorot_uniform"``.
    """

    def __init__(self, attention_maps=128, kernel_initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        if not isinstance(attention_maps, int) or attention_maps < 1:
            raise ValueError(f"attention_maps must be a positive integer, got {attention_maps!r}.")
        self.attention_maps = attention_maps
        self.kernel_initializer = keras.initializers.get(kernel_initializer)

    @staticmethod
    def _split_shapes(input_shape):
        if (
            isinstance(input_shape, (list, tuple))
            and input_shape
            and isinstance(input_shape[0], (list, tuple))
        ):
            if len(input_shape) != 2:
                raise ValueError(
                    f"GlobalAttention takes x or [query, source], got {len(input_shape)} inputs."
                )
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), tuple(input_shape)

    def build(self, input_shape):
        query_shape, source_shape = self._split_shapes(input_shape)
        if query_shape[-1] is None or source_shape[-1] is None:
            raise ValueError(f"GlobalAttention needs known channel counts, got {input_shape}.")

        def conv(filters, name, bias_initializer="zeros"):
            return sublayer_conv(self, filters, 1, name, bias_initializer=bias_initializer)

        self.selection_conv = conv(self.attention_maps, "f_p")
        self.gather_conv = conv(self.attention_maps, "f_q")
        # M2 starts near C2: it cancels eq. (6)'s 1/C2 at initialisation (see the class
        # docstring), so the branch starts at the magnitude of the local one.
        self.channel_conv = conv(
            source_shape[-1], "f_m2", keras.initializers.Constant(float(self.attention_maps))
        )
        self.selection_conv.build(query_shape)
        self.gather_conv.build(source_shape)
        self.channel_conv.build((source_shape[0], 1, 1, source_shape[-1]))

    def call(self, inputs):
        if isinstance(inputs, (list, tuple)):
            query, source = inputs
        else:
            query = source = inputs
        pooled = ops.mean(source, axis=[1, 2], keepdims=True)
        channel_weights = self.channel_conv(pooled)[:, 0, 0, :]
        return global_attention(
            self.selection_conv(query), self.gather_conv(source), source, channel_weights
        )

    def compute_output_shape(self, input_shape):
        query_shape, source_shape = self._split_shapes(input_shape)
        return tuple(query_shape[:-1]) + (source_shape[-1],)

    def get_config(self):
        return {
            **super().get_config(),
            "attention_maps": self.attention_maps,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
        }
