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


class _Halves(keras.layers.Layer):
    """What :class:`SplitPatches` and :class:`MergePatches` share: the ``axis`` (1 for
    height, 2 for width) along which an image is cut in two halves stacked along the
    batch, and the shapes that follow. ``to_batch`` is True for the split (batch doubles,
    ``axis`` halves) and False for the merge (the inverse)."""

    to_batch = True

    def __init__(self, axis, **kwargs):
        super().__init__(**kwargs)
        if axis not in (1, 2):
            raise ValueError(f"axis must be 1 (height) or 2 (width), got {axis!r}.")
        self.axis = axis

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        grow, shrink = (0, self.axis) if self.to_batch else (self.axis, 0)
        shape[grow] = None if shape[grow] is None else 2 * shape[grow]
        shape[shrink] = None if shape[shrink] is None else shape[shrink] // 2
        return tuple(shape)

    def get_config(self):
        return {**super().get_config(), "axis": self.axis}


@keras.saving.register_keras_serializable(package="tfdeblur")
class SplitPatches(_Halves):
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

    def call(self, inputs):
        # An even split (TFLite SPLIT, ONNX Split) rather than slices at a computed
        # half: with dynamic H, W the halves' sizes then follow from the input shape,
        # with no shape arithmetic in the graph (which keeps the XNNPACK delegate on
        # the convolutions that follow).
        first, second = ops.split(inputs, 2, axis=self.axis)
        return ops.concatenate([first, second], axis=0)


@keras.saving.register_keras_serializable(package="tfdeblur")
class MergePatches(_Halves):
    """Inverse of :class:`SplitPatches`: ``(2B, ...)`` halves stitched back along ``axis``.

    Args:
        axis: 1 (height) or 2 (width).
    """

    to_batch = False

    def call(self, inputs):
        first, second = ops.split(inputs, 2, axis=0)
        return ops.concatenate([first, second], axis=self.axis)
