"""Structured pruning: remove attention heads and feed-forward units.

- `find_prunable`: the heads of every `MultiHeadAttention` and the
  feed-forward units of every Transformer block, by path.
- `importance`: Michel et al. (2019) gate-gradient scores on the user's
  data; `select`: the least important heads and units, across layers.
- `prune_model`: a smaller dense model without them (saves as `.keras`,
  exports like any model); `gated`: the same computation in place.
- `fine_tune` (optionally distilled from the unpruned model) and
  `prune_iteratively`: steps to a target fraction, stopping when the
  validation metric drops more than a tolerance.
"""

from kerasattn.prune._structure import PrunableGroup
from kerasattn.prune._structure import find_prunable
from kerasattn.prune.importance import counts
from kerasattn.prune.importance import importance
from kerasattn.prune.importance import select
from kerasattn.prune.removal import gated
from kerasattn.prune.removal import prune_model
from kerasattn.prune.removal import rebuild_from_config
from kerasattn.prune.recovery import DistillationLoss
from kerasattn.prune.recovery import PackedLogits
from kerasattn.prune.recovery import distillation_model
from kerasattn.prune.recovery import fine_tune
from kerasattn.prune.schedule import PruningResult
from kerasattn.prune.schedule import PruningStep
from kerasattn.prune.schedule import prune_iteratively

__all__ = [
    "DistillationLoss",
    "PackedLogits",
    "PruningResult",
    "PruningStep",
    "distillation_model",
    "fine_tune",
    "prune_iteratively",
    "PrunableGroup",
    "counts",
    "find_prunable",
    "gated",
    "importance",
    "prune_model",
    "rebuild_from_config",
    "select",
]
