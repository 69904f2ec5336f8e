"""kerasattn: attention layers for Keras 3, and the pieces the zoo is built from."""

from kerasattn import generation
from kerasattn import layers
from kerasattn import ops

__version__ = "0.1.0"

__all__ = ["generation", "layers", "ops", "__version__"]
