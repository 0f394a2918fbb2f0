"""Custom Keras layers of tfdeblur, one layer family per module.

Every layer is registered with ``keras.saving.register_keras_serializable(package="tfdeblur")``
so that models saved as ``.keras`` load with ``safe_mode=True`` once this package is imported.
"""

from keras_layers.conv_lstm import ConvLSTMCell2D, FrameRecurrence
from keras_layers.deformable_conv import DRM, DeformableConv2D, deform_conv2d
from keras_layers.dynamic_filter import DynamicFilter, dynamic_filter
from keras_layers.gaussian_pyramid import GaussianPyramid, gaussian_pyramid
from keras_layers.global_attention import GlobalAttention, global_attention
from keras_layers.global_local import GlobalLocalModule, GlobalLocalResBlock
from keras_layers.local_correlation import LCBlock, local_correlation
from keras_layers.multi_patch import MergePatches, SplitPatches
from keras_layers.padding import CropToReference, PadToMultiple
from keras_layers.pixel_shuffle import PixelShuffle
from keras_layers.res_block import ResBlock
from keras_layers.self_attention import SelfAttention2D

__all__ = [
    "ConvLSTMCell2D",
    "CropToReference",
    "DRM",
    "DeformableConv2D",
    "DynamicFilter",
    "FrameRecurrence",
    "GaussianPyramid",
    "GlobalAttention",
    "GlobalLocalModule",
    "GlobalLocalResBlock",
    "LCBlock",
    "MergePatches",
    "PadToMultiple",
    "PixelShuffle",
    "ResBlock",
    "SelfAttention2D",
    "SplitPatches",
    "deform_conv2d",
    "dynamic_filter",
    "gaussian_pyramid",
    "global_attention",
    "local_correlation",
]
