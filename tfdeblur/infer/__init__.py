"""Inference: one runner per file format (:mod:`~tfdeblur.infer.runners`), precision
(:mod:`~tfdeblur.infer.precision`), tiling, and deblurring arrays and image files
(:mod:`~tfdeblur.infer.images`), videos (:mod:`~tfdeblur.infer.video`), many files at once
(:mod:`~tfdeblur.infer.files`) and the before/after comparison images
(:mod:`~tfdeblur.infer.compare`). This package file imports nothing."""
