"""Sandhive: self-hosted sandboxes for AI agents, compatible with E2B's SDKs."""

__version__ = "0.1.0"
