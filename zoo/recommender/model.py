"""The sequential recommender: a causal Transformer over item histories, and its two tasks.

- `SequentialRecommenderBackbone`: item embeddings (scaled by `sqrt(d)`, as
  SASRec) + learned positions → causal pre-norm `TransformerEncoderBlock`s →
  a user state at every position;
- `NextItemRetriever` (SASRec): scores every item by the dot product of the
  last user state with the (shared) item embeddings; trained with SASRec's
  BCE and one negative, a sampled softmax with logQ correction, or the full
  softmax (`zoo.recommender.losses`);
- `CandidateScorer` (DIN / BST): each candidate attends over the encoded
  history with `kerasattn.layers.TargetAttention`, optionally with item
  side features (genres) and user features, then an MLP gives its logit.
"""

from __future__ import annotations

import os
from typing import Optional, Sequence, Union

import keras
import numpy as np
from keras import ops

from kerasattn import layers
from kerasattn.layers._validation import positive_int
from kerasattn.layers._validation import rate
from zoo.backbone import Backbone
from zoo.backbone import per_layer
from zoo.backbone import resized_blocks_config
from zoo.distribute import scale_loss_for_replicas
from zoo.recommender import losses as recommender_losses
from zoo.recommender.preprocessor import RecommenderPreprocessor
from zoo.task import Task

LOSSES = ("bce", "sampled_softmax", "full_softmax")
# What an item the user has seen scores when `recommend` leaves seen items out.
_SEEN_SCORE = -1e9


def _history_input(length: Optional[int] = None):
    return keras.Input(shape=(length,), dtype="int32", name="item_ids")


@keras.saving.register_keras_serializable(package="zoo")
class SequentialRecommenderBackbone(Backbone):
    """Item histories to user states: SASRec's causal self-attention encoder.

    item embedding × `sqrt(hidden_dim)` + learned position embedding, zeroed
    at the padding → dropout → `num_layers` pre-norm `TransformerEncoderBlock`s
    with a causal mask and the padding mask → a final layer normalization.
    Histories are left-padded (the last position holds the latest item), so
    position embeddings count back from the end (`align="end"`): a batch of
    short histories cut to its longest one (as `kerasattn.data.
    training_sequences(sort_by_length=True)` batches them) gives exactly the
    states of the same histories padded to `max_sequence_length`, at a
    fraction of the work.

    The item embedding layer, named `"item_embedding"` (`(num_items + 1,
    hidden_dim)`, row 0 the padding), is also the output embedding of the
    tasks: `backbone.item_embeddings`.

    Args:
        num_items: the catalogue size `N`; item ids run 1..N, 0 is padding.
        max_sequence_length: history positions `L`: the longest history
            encoded (a longer one keeps its last `L` items).
        hidden_dim: width `d`.
        num_layers: Transformer blocks.
        num_heads: attention heads (dividing `hidden_dim` unless `head_dim` is
            given), or a list of one count per block (a pruned backbone's).
        intermediate_dim: feed-forward width, or a list of one per block;
            `None` for `hidden_dim` (SASRec).
        dropout: dropout on the embeddings and in the blocks.
        attention_dropout: dropout on the attention weights.
        head_dim: width of every attention head; `None` for
            `hidden_dim // num_heads` (then `num_heads` must be one int).
        dtype: optional dtype policy of every layer.
        **kwargs: `keras.Model` arguments such as `name`.

    Inputs: `{"item_ids": int32 (B, T)}`, left-padded with 0, any `T`.
    Outputs: `{"sequence_output": (B, T', d), "attention_scores": (B,
    num_heads, T', T')}` (the last block's attention weights), `T' =
    min(T, L)`.
    """

    def __init__(self, num_items: int, max_sequence_length: int = 50, hidden_dim: int = 50,
                 num_layers: int = 2, num_heads: Union[int, Sequence[int]] = 1,
                 intermediate_dim: Union[None, int, Sequence[int]] = None,
                 dropout: float = 0.2, attention_dropout: float = 0.0,
                 head_dim: Optional[int] = None, dtype=None, **kwargs):
        positive_int("num_items", num_items)
        positive_int("max_sequence_length", max_sequence_length)
        positive_int("hidden_dim", hidden_dim)
        positive_int("num_layers", num_layers)
        heads_per_layer = per_layer("num_heads", num_heads, num_layers)
        units_per_layer = per_layer("intermediate_dim", intermediate_dim or hidden_dim,
                                    num_layers)
        rate("dropout", dropout)
        rate("attention_dropout", attention_dropout)
        positive_int("head_dim", head_dim, allow_none=True)
        if head_dim is None and not isinstance(num_heads, int):
            raise ValueError("Expected `head_dim` with a list of head counts, received: "
                             f"num_heads={list(num_heads)!r}, head_dim=None")
        if head_dim is None and hidden_dim % num_heads:
            raise ValueError("Expected `hidden_dim` divisible by `num_heads`, received: "
                             f"hidden_dim={hidden_dim}, num_heads={num_heads}")
        inputs = _history_input()
        item_ids = inputs[:, -max_sequence_length:]
        padding_mask = ops.greater(item_ids, 0)
        x = keras.layers.Embedding(
            num_items + 1, hidden_dim, name="item_embedding", dtype=dtype,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
        )(item_ids)
        x = keras.layers.Rescaling(hidden_dim**0.5, name="item_embedding_scale", dtype=dtype)(x)
        positions = layers.PositionEmbedding(max_sequence_length, align="end",
                                             name="position_embedding", dtype=dtype)(x)
        x = keras.layers.Add(name="embeddings", dtype=dtype)([x, positions])
        x = x * ops.expand_dims(ops.cast(padding_mask, x.dtype), -1)
        x = keras.layers.Dropout(dropout, name="embeddings_dropout", dtype=dtype)(x)
        scores = None
        for index in range(num_layers):
            x, scores = layers.TransformerEncoderBlock(
                num_heads=heads_per_layer[index],
                intermediate_dim=units_per_layer[index],
                key_dim=head_dim,
                dropout=dropout,
                attention_dropout=attention_dropout,
                activation="gelu",
                norm_first=True,
                name=f"encoder_block_{index}",
                dtype=dtype,
            )(x, padding_mask=padding_mask, use_causal_mask=True, return_attention_scores=True)
        x = keras.layers.LayerNormalization(epsilon=1e-6, name="output_layer_norm",
                                            dtype=dtype)(x)
        outputs = {"sequence_output": x, "attention_scores": scores}
        super().__init__(inputs={"item_ids": inputs}, outputs=outputs, dtype=dtype, **kwargs)
        self.num_items = num_items
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.num_layers = num_layers
        self.num_heads = num_heads if isinstance(num_heads, int) else list(num_heads)
        self.intermediate_dim = (intermediate_dim if intermediate_dim is None
                                 or isinstance(intermediate_dim, int) else list(intermediate_dim))
        self.head_dim = head_dim
        self.dropout = float(dropout)
        self.attention_dropout = float(attention_dropout)

    @property
    def item_embeddings(self):
        """The `(num_items + 1, hidden_dim)` item embedding table (a variable)."""
        return self.get_layer("item_embedding").embeddings

    def get_config(self) -> dict:
        return {
            **super().get_config(),
            "num_items": self.num_items,
            "max_sequence_length": self.max_sequence_length,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "head_dim": self.head_dim,
        }

    def pruned_config(self, updates: dict) -> dict:
        """This backbone's config with blocks resized by `kerasattn.prune`
        (`zoo.backbone.resized_blocks_config`)."""
        return resized_blocks_config(self, updates)


def _compiled(function):
    """`function` as a `tf.function` under the TensorFlow backend (else as it is)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.function(function, reduce_retracing=True)
    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(function)
    return function


def _as_histories(histories, length: int) -> np.ndarray:
    """int32 `(B, length)`: longer rows keep their last items, shorter are left-padded."""
    histories = np.asarray(histories, dtype=np.int32)
    if histories.ndim == 1:
        histories = histories[None]
    if histories.ndim != 2:
        raise ValueError(f"Expected histories of shape (B, L), received: {histories.shape}")
    if histories.shape[1] >= length:
        return np.ascontiguousarray(histories[:, -length:])
    return np.pad(histories, ((0, 0), (length - histories.shape[1], 0)))


def _as_full_histories(histories) -> np.ndarray:
    """int32 `(B, T)` histories of any width `T >= 1` (a 1-D history is one row)."""
    histories = np.asarray(histories)
    if histories.ndim == 1:
        histories = histories[None]
    if histories.ndim != 2 or not histories.shape[1] or (
            histories.size and histories.dtype.kind not in "iu"):
        raise ValueError(f"Expected int histories of shape (B, T), received: shape="
                         f"{histories.shape}, dtype={histories.dtype}")
    return np.ascontiguousarray(histories, dtype=np.int32)


@keras.saving.register_keras_serializable(package="zoo")
class NextItemRetriever(Task):
    """Next-item retrieval (SASRec): the user state against every item embedding.

    The model maps `{"item_ids": (B, T)}` to the user states `(B, T, d)`;
    the score of item `i` after position `t` is `state_t · E_i`, with `E` the
    backbone's item embedding table. `compute_loss` trains every position on
    its next item (`fit` takes `(inputs, positives)` batches from
    `kerasattn.data.training_sequences`, `positives == 0` at the padding),
    with `loss`:

    - `"bce"`: SASRec's binary cross-entropy, one negative per position drawn
      uniformly from 1..N (whatever `item_counts`);
    - `"sampled_softmax"`: softmax over the positive and `num_negatives`
      negatives shared by the batch, drawn uniformly (logQ is then a
      constant and left out) or, given `item_counts`, in proportion to the
      items' training counts, with the logQ correction `-log q(i)`;
    - `"full_softmax"`: softmax cross-entropy over the whole catalogue.

    Args:
        backbone: a `SequentialRecommenderBackbone`.
        preprocessor: optional `RecommenderPreprocessor` (raw item labels).
        loss: one of `LOSSES`.
        num_negatives: negatives per batch of `"sampled_softmax"`.
        item_counts: optional `num_items + 1` training counts (index 0, the
            padding, is never sampled): `"sampled_softmax"` then samples by
            popularity, with the logQ correction.
        seed: optional seed of the negative sampling.
        **kwargs: `name`.
    """

    backbone_cls = SequentialRecommenderBackbone
    preprocessor_cls = RecommenderPreprocessor

    def __init__(self, backbone: SequentialRecommenderBackbone,
                 preprocessor: Optional[RecommenderPreprocessor] = None,
                 loss: str = "full_softmax", num_negatives: int = 256,
                 item_counts: Optional[Sequence[int]] = None, seed: Optional[int] = None,
                 **kwargs):
        self.check_components(backbone, preprocessor)
        if loss not in LOSSES:
            raise ValueError(f"Expected `loss` to be one of {LOSSES}, received: loss={loss!r}")
        positive_int("num_negatives", num_negatives)
        if preprocessor is not None and preprocessor.num_items != backbone.num_items:
            raise ValueError(f"Expected a preprocessor of {backbone.num_items} items, received: "
                             f"{preprocessor.num_items}")
        if item_counts is not None:
            item_counts = [int(count) for count in item_counts]
            if len(item_counts) != backbone.num_items + 1 or min(item_counts) < 0 or not sum(
                    item_counts[1:]):
                raise ValueError(
                    f"Expected `item_counts` of {backbone.num_items + 1} counts >= 0 (index 0 "
                    f"the padding) and some positive, received: {len(item_counts)} counts"
                )
        inputs = {"item_ids": _history_input()}
        outputs = backbone(inputs)["sequence_output"]
        super().__init__(inputs=inputs, outputs=outputs, backbone=backbone,
                         preprocessor=preprocessor, **kwargs)
        self.loss_name = loss
        self.num_negatives = num_negatives
        self.item_counts = item_counts
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed, name="negative_sampling")
        self._log_q = None
        if item_counts is not None:
            counts = np.asarray(item_counts, dtype=np.float64)
            counts[0] = 0.0
            # Items never sampled (the padding, items unseen in training) are
            # never positives either (or only at masked positions): a finite
            # 0 keeps their logits, and so the gradients, free of infinities.
            with np.errstate(divide="ignore"):
                log_q = np.log(counts / counts.sum())
            self._log_q = np.where(counts > 0, log_q, 0.0).astype(np.float32)
        self._score_function = None
        self._recommend_function = None
        self._state_function = None
        self._retrieval_index = None
        # The index last checked against this model's item table (checked once per index).
        self._checked_index = None

    @property
    def num_items(self) -> int:
        return self.backbone.num_items

    @property
    def item_embeddings(self):
        return self.backbone.item_embeddings

    def default_compile_arguments(self) -> dict:
        # The loss is the task's own (`compute_loss`), not a Keras loss.
        return {**super().default_compile_arguments(), "optimizer": keras.optimizers.Adam(1e-3)}

    def _negatives(self, shape, popularity: bool = False):
        if not popularity or self._log_q is None:
            return keras.random.randint(shape, 1, self.num_items + 1, dtype="int32",
                                        seed=self.seed_generator)
        logits = ops.convert_to_tensor(self._log_q[None])
        draws = keras.random.categorical(logits, int(np.prod(shape)), dtype="int32",
                                         seed=self.seed_generator)
        return ops.reshape(draws, shape)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        states = y_pred
        positives = ops.cast(y, "int32")
        table = ops.cast(self.item_embeddings, states.dtype)
        mask = ops.not_equal(positives, 0)
        if self.loss_name == "bce":
            negatives = self._negatives(ops.shape(positives))
            loss = recommender_losses.bce_one_negative_loss(states, table, positives, negatives,
                                                            mask=mask)
        elif self.loss_name == "sampled_softmax":
            negatives = self._negatives((self.num_negatives,), popularity=True)
            log_q = None if self._log_q is None else ops.convert_to_tensor(self._log_q)
            loss = recommender_losses.sampled_softmax_loss(states, table, positives, negatives,
                                                           log_q=log_q, mask=mask)
        else:
            if keras.backend.backend() == "tensorflow":
                # Score the real positions only: in short-history data (Amazon's,
                # ~7 items a user) most of the (B, L) positions are padding, and
                # the (positions, N) logits are the step's main cost.
                import tensorflow as tf

                states = tf.boolean_mask(states, mask)[None]
                positives = tf.boolean_mask(positives, mask)[None]
                mask = None
            loss = recommender_losses.full_softmax_loss(states, table, positives, mask=mask)
        if self.losses:
            loss = loss + ops.sum(self.losses)
        return scale_loss_for_replicas(loss)

    # -- inference --------------------------------------------------------------

    def _scores(self, item_ids):
        states = self.backbone({"item_ids": item_ids}, training=False)["sequence_output"][:, -1]
        table = ops.cast(self.item_embeddings, states.dtype)
        scores = ops.cast(ops.matmul(states, ops.transpose(table)), "float32")
        # Column 0 is the padding: never a recommendation.
        padding = ops.equal(ops.arange(self.num_items + 1), 0)
        return ops.where(padding[None], -np.inf, scores)

    def _recommend(self, item_ids, seen_ids, top_k: int):
        """Exact top-k; `seen_ids` (any width, 0 for none) score `_SEEN_SCORE`."""
        scores = self._scores(item_ids)
        if seen_ids is not None:
            batch = ops.shape(seen_ids)[0]
            # Each history's row number at each of its positions (any length).
            rows = ops.reshape(ops.zeros_like(seen_ids) + ops.arange(batch, dtype="int32")[:, None],
                               (-1,))
            indices = ops.stack([rows, ops.reshape(seen_ids, (-1,))], axis=1)
            seen = ops.scatter(indices, ops.ones((ops.shape(indices)[0],), "float32"),
                               (batch, self.num_items + 1))
            scores = ops.where(seen > 0, _SEEN_SCORE, scores)
            scores = ops.where(ops.equal(ops.arange(self.num_items + 1), 0)[None], -np.inf,
                               scores)
        values, ids = ops.top_k(scores, top_k)
        return ops.cast(ids, "int32"), values

    def score_all(self, histories) -> np.ndarray:
        """Every item's score after each history: float32 `(B, N + 1)`, column 0 `-inf`.

        Args:
            histories: int `(B, T)` item ids, left-padded (cut or padded to `L`).
        """
        if self._score_function is None:
            self._score_function = _compiled(self._scores)
        ids = _as_histories(histories, self.backbone.max_sequence_length)
        return np.asarray(self._score_function(ops.convert_to_tensor(ids)))

    def user_states(self, histories) -> np.ndarray:
        """The user state after each history, the query of every item's score.

        Args:
            histories: int `(B, T)` item ids, left-padded (the last `L` are encoded).

        Returns:
            float32 `(B, hidden_dim)`: item `i` scores `states @ E_i`.
        """
        if self._state_function is None:
            self._state_function = _compiled(lambda ids: ops.cast(self.backbone(
                {"item_ids": ids}, training=False)["sequence_output"][:, -1], "float32"))
        ids = _as_histories(histories, self.backbone.max_sequence_length)
        return np.asarray(self._state_function(ops.convert_to_tensor(ids)))

    def recommend(self, histories, top_k: int = 10, exclude_seen: bool = True,
                  index=None) -> tuple[np.ndarray, np.ndarray]:
        """The `top_k` best items after each history, by score.

        The user state encodes the last `L` (`max_sequence_length`) items of
        each history; `exclude_seen` leaves out every item of the history
        given, however long.

        Args:
            histories: int `(B, T)` item ids, left-padded with 0, any `T`.
            top_k: items returned per history.
            exclude_seen: leave out the items of the history (they score
                -1e9, so they come last if `top_k` needs them).
            index: `None` to score every item exactly (in-graph `top_k`);
                a `RetrievalIndex` (see `build_index`), or the path of a
                saved one, to take the candidates from it. The index is
                asked for `top_k` plus the number of distinct seen items, so
                that leaving them out still leaves `top_k`; the candidates
                are then scored exactly and sorted; a history the index
                cannot fill is scored exactly.

        Returns:
            `(ids, scores)`: int32 and float32 `(B, top_k)`, best first.
        """
        positive_int("top_k", top_k)
        if top_k > self.num_items:
            raise ValueError(f"Expected `top_k` <= {self.num_items} items, received: {top_k}")
        full = _as_full_histories(histories)
        if full.size and (full.min() < 0 or full.max() > self.num_items):
            raise ValueError(f"Expected item ids in 0..{self.num_items} (0: padding), received: "
                             f"ids from {full.min()} to {full.max()}")
        if index is not None:
            return self._recommend_from_index(self._usable_index(index), full, top_k,
                                              bool(exclude_seen))
        key = (top_k, bool(exclude_seen))
        if self._recommend_function is None or self._recommend_function[0] != key:
            self._recommend_function = (key, _compiled(
                lambda ids, seen: self._recommend(ids, seen if exclude_seen else None, top_k)))
        ids = _as_histories(full, self.backbone.max_sequence_length)
        items, scores = self._recommend_function[1](ops.convert_to_tensor(ids),
                                                    ops.convert_to_tensor(full))
        return np.asarray(items), np.asarray(scores)

    # -- nearest-neighbour retrieval ------------------------------------------------

    @property
    def retrieval_index(self):
        """The `RetrievalIndex` saved and loaded with this model (`None` without one).

        `build_index` sets it; `save_to_preset`, `from_preset` and `.keras`
        files (`save` / `keras.saving.load_model`) keep it. Assign an index
        (or `None`) to replace it.
        """
        return self._retrieval_index

    @retrieval_index.setter
    def retrieval_index(self, index) -> None:
        from zoo.recommender.retrieval import RetrievalIndex

        if index is not None and not isinstance(index, RetrievalIndex):
            raise ValueError(f"Expected a RetrievalIndex or None, received: "
                             f"{type(index).__name__}")
        if index is not None:
            index.check(self._item_table())
            self._checked_index = index
        self._retrieval_index = index

    def _item_table(self) -> np.ndarray:
        return np.asarray(ops.convert_to_numpy(self.item_embeddings), dtype=np.float32)

    def build_index(self, kind: str = "ivf", **options):
        """Builds a nearest-neighbour index of the item embeddings (FAISS).

        The index answers `recommend(..., index=...)` for catalogues too
        large to score every item; it is kept with the model
        (`retrieval_index`) and saved with it. Rebuild it after training:
        it holds the embeddings of the time it was built.

        Args:
            kind: `"ivf"` (k-means cells, the default), `"hnsw"` (a graph) or
                `"flat"` (exact); see `zoo.recommender.retrieval`.
            **options: the kind's options, such as `nlist`, `nprobe` for
                `"ivf"`, `m`, `ef_construction`, `ef_search` for `"hnsw"`.

        Returns:
            The `RetrievalIndex`.
        """
        from zoo.recommender.retrieval import RetrievalIndex

        index = RetrievalIndex.build(self._item_table(), kind, **options)
        self._checked_index = index
        self._retrieval_index = index
        return index

    def _usable_index(self, index):
        """`index` (or the index file at that path), checked against this model once."""
        from zoo.recommender.retrieval import RetrievalIndex

        if isinstance(index, (str, os.PathLike)):
            index = RetrievalIndex.load(index)
        if not isinstance(index, RetrievalIndex):
            raise ValueError(f"Expected `index` to be a RetrievalIndex, a path or None, "
                             f"received: {type(index).__name__}")
        if index is not self._checked_index:
            index.check(self._item_table())
            self._checked_index = index
        return index

    def _recommend_from_index(self, index, full: np.ndarray, top_k: int,
                              exclude_seen: bool) -> tuple[np.ndarray, np.ndarray]:
        states = self.user_states(full)
        width = self.num_items + 1
        rows = np.arange(len(full))[:, None]
        if exclude_seen:
            # Each seen (row, item) pair as one number, to test candidates in one `isin`.
            seen_pairs = (rows * width + full)[full > 0]
            ordered = np.sort(full, axis=1)
            counts = np.sum((ordered > 0) & np.concatenate(
                [np.ones((len(full), 1), bool), ordered[:, 1:] != ordered[:, :-1]], axis=1),
                axis=1)
        else:
            seen_pairs, counts = np.zeros((0,), np.int64), np.zeros(len(full), np.int64)
        # Over-fetch by the row's seen items: after leaving them out, `top_k` remain. Rows
        # are searched in groups of like need (powers of two): one search of the batch
        # would fetch for its longest history (up to 859 items in Video Games), and a
        # search's cost grows with `k` (3x on a batch of 256 there).
        need = np.minimum(self.num_items,
                          2 ** np.ceil(np.log2(top_k + counts)).astype(np.int64))
        # The first `2 * top_k` unseen candidates of each row in the index's order (its
        # scores are inner products up to float32 rounding of the L2 reduction), to be
        # re-scored exactly with the model's table: the scores returned are the exact path's.
        shortlist = min(self.num_items, 2 * top_k)
        candidates = np.zeros((len(full), shortlist), np.int64)
        keep = np.zeros((len(full), shortlist), bool)
        for fetch in np.unique(need):
            members = np.flatnonzero(need == fetch)
            found, _ = index.search(states[members], int(fetch))
            valid = (found > 0) & ~np.isin(members[:, None] * width + found, seen_pairs)
            first = valid & (np.cumsum(valid, axis=1) <= shortlist)
            picked = np.argsort(~first, axis=1, kind="stable")[:, :shortlist]
            columns = picked.shape[1]
            candidates[members, :columns] = np.take_along_axis(found, picked, axis=1)
            keep[members, :columns] = np.take_along_axis(first, picked, axis=1)
        candidates = np.where(keep, candidates, 0)
        vectors = np.asarray(ops.convert_to_numpy(ops.take(
            self.item_embeddings, ops.convert_to_tensor(candidates.astype(np.int32)), axis=0)))
        scores = np.einsum("bkd,bd->bk", vectors, states).astype(np.float32)
        scores = np.where(keep, scores, -np.inf)
        # Best first; equal scores by id, as `top_k` breaks ties: sort by id, then stably
        # by score.
        by_id = np.argsort(candidates, axis=1, kind="stable")
        candidates = np.take_along_axis(candidates, by_id, axis=1)
        scores = np.take_along_axis(scores, by_id, axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
        out_ids = np.take_along_axis(candidates, order, axis=1).astype(np.int32)
        out_scores = np.take_along_axis(scores, order, axis=1)
        # Rows the index could not fill with `top_k` unseen items are scored exactly.
        short = np.flatnonzero(keep.sum(axis=1) < top_k)
        if len(short):
            ids, values = self.recommend(full[short], top_k, exclude_seen)
            out_ids[short], out_scores[short] = ids, values
        return out_ids, out_scores

    def save_assets(self, dir_path: str) -> None:
        """Keras saving: writes the retrieval index (if any) into the `.keras` file's assets."""
        from zoo.recommender.retrieval import INDEX_FILE

        if self._retrieval_index is not None:
            self._retrieval_index.save(os.path.join(dir_path, INDEX_FILE))

    def load_assets(self, dir_path: str) -> None:
        """Keras loading: reads the retrieval index saved by `save_assets`.

        It is checked against the item table on first use: Keras loads the
        weights after the assets.
        """
        from zoo.recommender.retrieval import load_if_present

        index = load_if_present(dir_path)
        if index is not None:
            # Its path was a temporary folder's: name what a reader knows instead.
            index.metadata["path"] = "the .keras file's retrieval index"
        self._retrieval_index = index
        self._checked_index = None

    @classmethod
    def from_preset(cls, preset: str | os.PathLike, load_weights: bool = True,
                    **kwargs) -> "NextItemRetriever":
        """`Task.from_preset`, with the preset's retrieval index (`retrieval.index`) if any.

        The index is checked against the weights on first use, so that a preset
        whose index is stale still loads (and can be indexed again).
        """
        from zoo import preset as preset_format
        from zoo.recommender.retrieval import load_if_present

        task = super().from_preset(preset, load_weights=load_weights, **kwargs)
        if load_weights:
            task._retrieval_index = load_if_present(
                preset_format.find(preset, cls.preset_package()))
        return task

    def save_to_preset(self, folder: str | os.PathLike, description: str = "",
                       metrics: Optional[dict] = None) -> None:
        """`Task.save_to_preset`, plus the retrieval index (`retrieval.index`) if any;
        a stale index file from an earlier save is removed."""
        from pathlib import Path

        from zoo.recommender.retrieval import INDEX_FILE

        super().save_to_preset(folder, description=description, metrics=metrics)
        path = Path(folder) / INDEX_FILE
        if self._retrieval_index is not None:
            self._retrieval_index.save(path)
        elif path.exists():
            path.unlink()

    def get_config(self) -> dict:
        return {**super().get_config(), "loss": self.loss_name,
                "num_negatives": self.num_negatives, "item_counts": self.item_counts,
                "seed": self.seed}


@keras.saving.register_keras_serializable(package="zoo")
class CandidateScorer(Task):
    """Scores given candidate items for a user (DIN / BST): target attention over the history.

    The backbone encodes the history; each candidate's vector (its item
    embedding, plus a projection of its genres with `num_genres`) is the
    query of a `kerasattn.layers.TargetAttention` (DIN's MLP activation unit,
    softmax-normalised) over the encoded history; `[interest, candidate,
    interest * candidate, user state, user features]` then go through an
    MLP to one logit per candidate. User features are integer ids (such as
    an age bucket, a gender, an occupation), 0 for unknown, each embedded.

    Args:
        backbone: a `SequentialRecommenderBackbone` (its item embeddings
            embed the candidates too).
        preprocessor: optional `RecommenderPreprocessor`.
        num_genres: width of `candidate_genres` (0: no item side features).
        user_feature_sizes: the number of ids of each user feature (0 is
            unknown); empty for none.
        hidden_units: widths of the MLP's hidden layers.
        attention_units: widths of the attention MLP's hidden layers.
        dropout: dropout in the MLP.
        **kwargs: `name`.

    Inputs: `{"item_ids": (B, L), "candidate_ids": (B, C)}`, and
    `"candidate_genres"` float `(B, C, num_genres)`, `"user_features"`
    int32 `(B, len(user_feature_sizes))` when configured.
    Outputs: `{"scores": float32 (B, C)}` logits (σ gives a probability).
    """

    backbone_cls = SequentialRecommenderBackbone
    preprocessor_cls = RecommenderPreprocessor

    def __init__(self, backbone: SequentialRecommenderBackbone,
                 preprocessor: Optional[RecommenderPreprocessor] = None, num_genres: int = 0,
                 user_feature_sizes: Sequence[int] = (), hidden_units: Sequence[int] = (200, 80),
                 attention_units: Sequence[int] = (80, 40), dropout: float = 0.2, **kwargs):
        self.check_components(backbone, preprocessor)
        if num_genres < 0:
            raise ValueError(f"Expected `num_genres` >= 0, received: {num_genres}")
        user_feature_sizes = [positive_int("user_feature_sizes", int(size))
                              for size in user_feature_sizes]
        hidden_units = [positive_int("hidden_units", int(units)) for units in hidden_units]
        attention_units = [positive_int("attention_units", int(units))
                           for units in attention_units]
        rate("dropout", dropout)
        dtype = backbone.dtype_policy
        width = backbone.hidden_dim
        inputs = {
            "item_ids": _history_input(backbone.max_sequence_length),
            "candidate_ids": keras.Input(shape=(None,), dtype="int32", name="candidate_ids"),
        }
        if num_genres:
            inputs["candidate_genres"] = keras.Input(shape=(None, num_genres), dtype="float32",
                                                     name="candidate_genres")
        if user_feature_sizes:
            inputs["user_features"] = keras.Input(shape=(len(user_feature_sizes),),
                                                  dtype="int32", name="user_features")
        history = backbone({"item_ids": inputs["item_ids"]})["sequence_output"]
        # The backbone's own item embedding layer: one table for history and candidates.
        candidates = backbone.get_layer("item_embedding")(inputs["candidate_ids"])
        if num_genres:
            genres = keras.layers.Dense(width, use_bias=False, name="genre_projection",
                                        dtype=dtype)(inputs["candidate_genres"])
            candidates = keras.layers.Add(name="candidate_features", dtype=dtype)(
                [candidates, genres])
        interest = layers.TargetAttention(
            score="mlp", hidden_units=tuple(attention_units), normalization="softmax",
            name="target_attention", dtype=dtype,
        )(candidates, history, query_mask=ops.greater(inputs["candidate_ids"], 0),
          value_mask=ops.greater(inputs["item_ids"], 0))
        # Ones over the candidates, to broadcast per-user vectors to (B, C, .).
        ones = ops.expand_dims(ops.ones_like(ops.cast(inputs["candidate_ids"], interest.dtype)),
                               -1)
        parts = [interest, candidates, interest * candidates,
                 ops.expand_dims(history[:, -1], 1) * ones]
        if user_feature_sizes:
            for index, size in enumerate(user_feature_sizes):
                embedded = keras.layers.Embedding(size, 8, name=f"user_feature_{index}",
                                                  dtype=dtype)(inputs["user_features"][:, index])
                parts.append(ops.expand_dims(embedded, 1) * ones)
        x = keras.layers.Concatenate(name="scorer_features", dtype=dtype)(parts)
        for index, units in enumerate(hidden_units):
            x = keras.layers.Dense(units, activation="relu", name=f"scorer_hidden_{index}",
                                   dtype=dtype)(x)
            x = keras.layers.Dropout(dropout, name=f"scorer_dropout_{index}", dtype=dtype)(x)
        logits = keras.layers.Dense(1, name="scorer_logit", dtype="float32")(x)
        outputs = {"scores": ops.squeeze(logits, -1)}
        super().__init__(inputs=inputs, outputs=outputs, backbone=backbone,
                         preprocessor=preprocessor, **kwargs)
        self.num_genres = int(num_genres)
        self.user_feature_sizes = user_feature_sizes
        self.hidden_units = hidden_units
        self.attention_units = attention_units
        self.dropout = float(dropout)

    def default_compile_arguments(self) -> dict:
        return {
            **super().default_compile_arguments(),
            "optimizer": keras.optimizers.Adam(1e-3),
            "loss": {"scores": keras.losses.BinaryCrossentropy(from_logits=True)},
        }

    def head_layers(self) -> list:
        inner = {id(layer) for layer in self.backbone.layers}
        return [layer for layer in super().head_layers() if id(layer) not in inner]

    def score(self, inputs: dict, batch_size: int = 1024) -> np.ndarray:
        """The candidates' logits, float32 `(B, C)`, for numpy inputs, batched."""
        return np.asarray(self.predict(inputs, batch_size=batch_size, verbose=0)["scores"])

    def get_config(self) -> dict:
        return {**super().get_config(), "num_genres": self.num_genres,
                "user_feature_sizes": self.user_feature_sizes,
                "hidden_units": self.hidden_units, "attention_units": self.attention_units,
                "dropout": self.dropout}

