"""SAPHN's global-local module (eq. 8) and its residual block.

Reference:
    Suin, Purohit, Rajagopalan, "Spatially-Attentive Patch-Hierarchical Network for
    Adaptive Motion Deblurring", CVPR 2020 (``../shared/papers/saphn_patch_hierarchical_attentive.txt``),
    sec. 2 (residual blocks, levels of patches), 2.2 (eq. 8); the patch hierarchy of
    Zhang et al., "Deep Stacked Hierarchical Multi-patch Network for Image Deblurring"
    (DMPHN), CVPR 2019.
"""

from __future__ import annotations

import inspect

import keras

from keras_layers.dynamic_filter import DynamicFilter
from keras_layers.global_attention import GlobalAttention
from keras_layers.res_block import residual_convs


@keras.saving.register_keras_serializable(package="tfdeblur")
class GlobalLocalModule(keras.layers.Layer):
    """Content-aware global-local module: ``x_GL = x_att + x_dyn`` (eq. 8).

    ``x_att`` is the global branch (:class:`GlobalAttention`, eq. 1-6) and ``x_dyn``
    the local branch (:class:`DynamicFilter`, eq. 7), both on the module input.

    Encoder modules use self-attention only. Decoder modules (``cross_attention=True``)
    are called on ``[x, source]`` and use "both self and cross module attention"
    (sec. 2.2): ``x_att = SelfAtt(x) + CrossAtt(query=x, source)`` with the source the
    encoder features. The paper does not say how the two attentions are combined; they
    are summed, as eq. (8) sums the branches ("sum-fuse").

    Args:
        attention_maps: int, C2 of the attention branches. Default 128.
        filter_size: odd int, k of the pixel-dependent filter. Default 5 (sec. 3.1).
        meta_filters: int or None, hidden width of the kernel-generating meta-layer; None
            for a meta-layer of one convolution (see :class:`DynamicFilter`). Default 128.
        cross_attention: bool, add the cross-attention branch (decoders). Default False.
        per_channel_kernel: bool, see :class:`DynamicFilter`. Default False.
        kernel_initializer: initializer of all convolutions. Default ``"glorot_uniform"``.
        meta_kernel_size: odd int, side of the meta-layer's convolutions. Default 3.
    """

    def __init__(
        self,
        attention_maps=128,
        filter_size=5,
        meta_filters=128,
        cross_attention=False,
        per_channel_kernel=False,
        kernel_initializer="glorot_uniform",
        meta_kernel_size=3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.attention_maps = attention_maps
        self.filter_size = filter_size
        self.meta_filters = meta_filters
        self.meta_kernel_size = meta_kernel_size
        self.cross_attention = bool(cross_attention)
        self.per_channel_kernel = bool(per_channel_kernel)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        common = {"kernel_initializer": self.kernel_initializer, "dtype": self.dtype_policy}
        self.self_attention = GlobalAttention(attention_maps, name="self_attention", **common)
        self.cross = (
            GlobalAttention(attention_maps, name="cross_attention", **common)
            if self.cross_attention
            else None
        )
        self.dynamic = DynamicFilter(
            None,
            filter_size,
            meta_filters,
            per_channel_kernel,
            meta_kernel_size=meta_kernel_size,
            name="dynamic_filter",
            **common,
        )

    def _usage_error(self):
        expected = "[x, source]" if self.cross_attention else "one tensor x"
        return ValueError(
            f"GlobalLocalModule(cross_attention={self.cross_attention}) must be called on "
            f"{expected}."
        )

    def _split(self, inputs):
        pair = isinstance(inputs, (list, tuple))
        if pair != self.cross_attention or (pair and len(inputs) != 2):
            raise self._usage_error()
        return (inputs[0], inputs[1]) if pair else (inputs, None)

    def _split_shapes(self, input_shape):
        pair = isinstance(input_shape[0], (list, tuple))
        if pair != self.cross_attention or (pair and len(input_shape) != 2):
            raise self._usage_error()
        if pair:
            return tuple(input_shape[0]), tuple(input_shape[1])
        return tuple(input_shape), None

    def build(self, input_shape):
        x_shape, source_shape = self._split_shapes(input_shape)
        if self.cross_attention:
            if x_shape[-1] != source_shape[-1]:
                raise ValueError(
                    f"cross-attention source must have the channels of x, got shapes "
                    f"{x_shape} and {source_shape}."
                )
            self.cross.build([x_shape, source_shape])
        self.self_attention.build(x_shape)
        self.dynamic.build(x_shape)

    def call(self, inputs):
        x, source = self._split(inputs)
        attended = self.self_attention(x)
        if self.cross_attention:
            attended = attended + self.cross([x, source])
        return attended + self.dynamic(x)

    def compute_output_shape(self, input_shape):
        return self._split_shapes(input_shape)[0]

    def options(self):
        """The module's arguments (its config less the base layer's), in signature order."""
        return {
            "attention_maps": self.attention_maps,
            "filter_size": self.filter_size,
            "meta_filters": self.meta_filters,
            "cross_attention": self.cross_attention,
            "per_channel_kernel": self.per_channel_kernel,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "meta_kernel_size": self.meta_kernel_size,
        }

    def get_config(self):
        return {**super().get_config(), **self.options()}


@keras.saving.register_keras_serializable(package="tfdeblur")
class GlobalLocalResBlock(keras.layers.Layer):
    """SAPHN residual block: ``y = x + conv(GL(ReLU(conv(x))))`` (sec. 2).

    "Each of these residual blocks contains 1 convolution layer followed by a
    content-aware processing module and another convolutional layer." The ReLU after
    the first convolution is DMPHN's (its residual block is conv-ReLU-conv + identity),
    the module taking the place between the two convolutions; the paper names no
    activation. With ``cross_attention=True`` (decoders) the block is called on
    ``[x, source]`` and the module's cross-attention queries with the block's
    intermediate features and reads the source (encoder features of the same scale).

    Args:
        kernel_size: int, kernel of the two convolutions. Default 3 (DMPHN).
        attention_maps, filter_size, meta_filters, cross_attention, per_channel_kernel,
        kernel_initializer, meta_kernel_size: the module's arguments, in this order
            after ``kernel_size`` or by name, with its defaults (see
            :class:`GlobalLocalModule`); the initializer also serves the two convolutions.
    """

    def __init__(self, kernel_size=3, *module_args, **kwargs):
        # The module's arguments (positional after kernel_size, or by name) go to the
        # module, the rest to the base layer.
        names = inspect.signature(GlobalLocalModule.__init__).parameters
        module_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in names and k != "self"}
        super().__init__(**kwargs)
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise ValueError(f"kernel_size must be a positive integer, got {kernel_size!r}.")
        self.kernel_size = kernel_size
        self.global_local = GlobalLocalModule(
            *module_args, **module_kwargs, dtype=self.dtype_policy, name="global_local"
        )
        self.cross_attention = self.global_local.cross_attention
        self.kernel_initializer = self.global_local.kernel_initializer
        self.act = keras.layers.ReLU(dtype=self.dtype_policy, name="act")

    def build(self, input_shape):
        x_shape = tuple(input_shape[0] if self.cross_attention else input_shape)
        self.conv1, self.conv2 = residual_convs(self, x_shape)
        if self.cross_attention:
            self.global_local.build([x_shape, tuple(input_shape[1])])
        else:
            self.global_local.build(x_shape)

    def call(self, inputs):
        if self.cross_attention:
            x, source = inputs
            h = self.global_local([self.act(self.conv1(x)), source])
        else:
            x = inputs
            h = self.global_local(self.act(self.conv1(x)))
        return x + self.conv2(h)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0] if self.cross_attention else input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "kernel_size": self.kernel_size,
            **self.global_local.options(),
        }
