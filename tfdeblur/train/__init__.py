"""Training: the loop ``train.py`` runs (:mod:`~tfdeblur.train.loop`), its losses, the
multi-worker cluster (:mod:`~tfdeblur.train.cluster`) and the run folder
(:mod:`~tfdeblur.train.run_folder`). Imports TensorFlow when its modules are imported;
this package file imports nothing."""
