"""edgecompress: a trained PyTorch model to an app-ready, measured bundle for one edge device."""

__version__ = "0.1.0"
