"""segkit: a plugin-based image segmentation toolkit."""
__version__ = "0.1.0"
