"""mtlssl: multi-task learning on a shared self-supervised encoder."""

__version__ = "0.1.0"
