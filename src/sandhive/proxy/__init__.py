"""The edge proxy: routes sandbox traffic (by E2B's headers or Host rules) to sandbox ports, the rest to the API."""

from .asgi import EdgeProxy
from .routing import BadTarget, parse_target

__all__ = ["BadTarget", "EdgeProxy", "parse_target"]
