"""Network definitions. Importing this package registers every network in the registry."""

from tfdeblur.models import (
    deepdeblur,  # noqa: F401
    lcnet,  # noqa: F401
    saphn,  # noqa: F401
    sarn,  # noqa: F401
)
