"""The service's version, in a module of its own so that every other can read it without importing the rest."""

__version__ = "0.5.2"
