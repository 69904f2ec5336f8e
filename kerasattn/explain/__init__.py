"""Explanations of attention models, and how faithful they are.

`from kerasattn import explain`: each method gives one score per input
position for a chosen output of a Keras model built from `kerasattn` layers
(`explain.explain(model, inputs, "rollout")`, or the functions by name), and
`cross_attention` an encoder–decoder's alignment, one distribution over the
source per target position;
`kerasattn.explain.faithfulness` measures them by deleting what they rank
highest. The gradient methods need the TensorFlow backend; this package,
like `kerasattn.callbacks`, imports TensorFlow and is not imported by
`import kerasattn`.
"""

from kerasattn.explain.methods import METHODS
from kerasattn.explain.methods import attention_flow
from kerasattn.explain.methods import attention_rollout
from kerasattn.explain.methods import cross_attention
from kerasattn.explain.methods import explain
from kerasattn.explain.methods import gradient_weighted_rollout
from kerasattn.explain.methods import input_x_gradient
from kerasattn.explain.methods import integrated_gradients
from kerasattn.explain.methods import padding_of
from kerasattn.explain.methods import random_scores
from kerasattn.explain.methods import raw_attention

__all__ = [
    "METHODS",
    "attention_flow",
    "attention_rollout",
    "cross_attention",
    "explain",
    "gradient_weighted_rollout",
    "input_x_gradient",
    "integrated_gradients",
    "padding_of",
    "random_scores",
    "raw_attention",
]
