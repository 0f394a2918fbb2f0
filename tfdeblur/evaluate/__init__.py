"""Evaluation: the GOPRO protocol (:mod:`~tfdeblur.evaluate.protocol`, ``tfdeblur eval``)
and the deployment benchmark (:mod:`~tfdeblur.evaluate.bench`, ``tfdeblur bench``). The
metrics themselves (:mod:`tfdeblur.metrics`) sit one level up: training and the
exporters' verification use them too. This package file imports nothing."""
