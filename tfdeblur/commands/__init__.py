"""Sub-commands of the ``tfdeblur`` CLI, one per module; each defines ``register(subparsers)``."""
