"""Keras callbacks for watching attention models train.

Import from here, `from kerasattn.callbacks import AttentionMapCallback`.
These use TensorFlow (`tf.summary`) and matplotlib; `import kerasattn` does
not import this package, so the layers work on any Keras backend.
"""

from kerasattn.callbacks.attention_map import AttentionMapCallback

__all__ = ["AttentionMapCallback"]
