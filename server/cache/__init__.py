"""The response cache: repeated requests answered from memory or local disk, never stale, never wrong.

Usage from the service::

    cache = ResponseCache.from_settings(settings)  # None under --no-cache
    key = cache.key(model=..., model_digest=..., inputs=..., outputs=..., parameters=...)
    outputs, outcome = cache.get_or_compute(model_name, key, compute, deadline=..., ttl_s=...)
    response.parameters["cache"] = outcome.parameter  # "hit" or "miss"

See docs/caching.md.
"""

from tensorgate.server.cache.codec import CorruptValueError, decode_outputs, encode_outputs
from tensorgate.server.cache.key import (
    TRANSPORT_PARAMETERS,
    TRANSPORT_PREFIXES,
    is_key_parameter,
    request_key,
)
from tensorgate.server.cache.observer import CacheObserver, CacheStats, Outcome
from tensorgate.server.cache.response_cache import Lookup, ResponseCache, shared

__all__ = [
    "TRANSPORT_PARAMETERS",
    "TRANSPORT_PREFIXES",
    "CacheObserver",
    "CacheStats",
    "CorruptValueError",
    "Lookup",
    "Outcome",
    "ResponseCache",
    "decode_outputs",
    "encode_outputs",
    "is_key_parameter",
    "request_key",
    "shared",
]
