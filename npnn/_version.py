"""The version of npnn, in a module of its own: the package, its checkpoints and its
command line read it here, and setup.cfg reads it without importing npnn."""

__version__ = "0.1.0"
