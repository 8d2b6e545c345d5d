"""samjax: Segment Anything in JAX/Flax, for training and serving."""

__version__ = "0.1.0"
