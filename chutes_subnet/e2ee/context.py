"""The request context a v2 envelope is bound to: defined in :mod:`chutes_subnet.wire.context`
(the gateway builds it too, and must not load this package), re-exported here."""

from chutes_subnet.wire.context import (
    AAD_LABEL,
    PADDING_NONE,
    PADDING_PADME,
    PADDING_SCHEMES,
    RequestContext,
)

__all__ = ["AAD_LABEL", "PADDING_NONE", "PADDING_PADME", "PADDING_SCHEMES", "RequestContext"]
