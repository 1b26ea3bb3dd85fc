"""Sandhive's version, in a module of its own so any part of the package can read it without importing the
package's `__init__` (which lazily re-exports the SDK: reading the version from there would make a cycle)."""

__version__ = "0.1.0"
