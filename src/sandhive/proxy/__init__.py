"""The edge proxy: routes sandbox traffic (by E2B's headers or Host rules) to sandbox ports, the rest to the API."""

from .access import Route
from .asgi import EdgeProxy
from .routing import BadTarget, parse_target

__all__ = ["BadTarget", "EdgeProxy", "Route", "parse_target"]
