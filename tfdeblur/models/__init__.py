"""Networks, their registry, training recipes and the import of official weights.

One module per network (``lcnet``, ``deepdeblur``, ``sarn`` with ``sarn_video``,
``saphn``); each registers its builder with :func:`tfdeblur.models.registry.register_model`.
Importing this package imports none of them (nor Keras): the registry imports them on
first use (:data:`tfdeblur.models.registry.NETWORK_MODULES`), so that ``train.py --help``
lists the networks from :data:`~tfdeblur.models.registry.CATALOG` without TensorFlow.
"""
