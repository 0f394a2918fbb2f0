"""Network definitions. Importing this package registers every network in the registry."""

from tfdeblur.models import lcnet  # noqa: F401
