"""Flowmetal: durable automation in Starlark."""

__version__ = "0.1.0"
