"""Multi-patch plumbing of SAPHN / DMPHN: splitting an image into non-overlapping patches
stacked along the batch, and stitching them back.

Reference:
    Zhang et al., "Deep Stacked Hierarchical Multi-patch Network for Image Deblurring"
    (DMPHN), CVPR 2019; SAPHN (Suin, Purohit, Rajagopalan, CVPR 2020) sec. 2, levels of
    patches.
"""

from __future__ import annotations

import keras
from keras import ops


def _check_axis(axis):
    if axis not in (1, 2):
        raise ValueError(f"axis must be 1 (height) or 2 (width), got {axis!r}.")


@keras.saving.register_keras_serializable(package="tfdeblur")
class SplitPatches(keras.layers.Layer):
    """Cuts ``(B, H, W, C)`` into two non-overlapping halves stacked along the batch.

    ``axis=1`` gives the top halves then the bottom halves, ``(2B, H/2, W, C)``;
    ``axis=2`` the left then the right halves, ``(2B, H, W/2, C)``. Applied twice
    (height, then width) it gives DMPHN's 4 patches of the bottom level. Stacking the
    patches along the batch lets one encoder process them all with shared weights.
    The size along ``axis`` must be even (the models pad first).
    :class:`MergePatches` with the same axis is the exact inverse.

    Args:
        axis: 1 (height) or 2 (width).
    """

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        _check_axis(axis)
        self.axis = axis

    def call(self, inputs):
        # An even split (TFLite SPLIT, ONNX Split) rather than slices at a computed
        # half: with dynamic H, W the halves' sizes then follow from the input shape,
        # with no shape arithmetic in the graph (which keeps the XNNPACK delegate on
        # the convolutions that follow).
        first, second = ops.split(inputs, 2, axis=self.axis)
        return ops.concatenate([first, second], axis=0)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[0] = None if shape[0] is None else 2 * shape[0]
        shape[self.axis] = None if shape[self.axis] is None else shape[self.axis] // 2
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="tfdeblur")
class MergePatches(keras.layers.Layer):
    """Inverse of :class:`SplitPatches`: ``(2B, ...)`` halves stitched back along ``axis``.

    Args:
        axis: 1 (height) or 2 (width).
    """

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        _check_axis(axis)
        self.axis = axis

    def call(self, inputs):
        first, second = ops.split(inputs, 2, axis=0)
        return ops.concatenate([first, second], axis=self.axis)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        shape[0] = None if shape[0] is None else shape[0] // 2
        shape[self.axis] = None if shape[self.axis] is None else 2 * shape[self.axis]
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}
