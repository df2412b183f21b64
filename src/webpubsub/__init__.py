"""webpubsub: a self-hosted service wire-compatible with Azure Web PubSub, and its SDK."""

__version__ = "0.1.0"

__all__ = ["__version__"]
