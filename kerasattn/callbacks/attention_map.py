"""A Keras callback that logs attention maps and entropies to TensorBoard."""

from __future__ import annotations

import os
import re
import warnings
from typing import Any, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from keras import tree

from kerasattn.callbacks import _collect
from kerasattn.callbacks import _heatmap
from kerasattn.layers import _validation

RUN_NAME = "attention"


def _tag(path: str) -> str:
    # TensorBoard tags: letters, digits and `_ . / -`.
    return re.sub(r"[^A-Za-z0-9_./-]", "_", path)


class AttentionMapCallback(keras.callbacks.Callback):
    """Logs the attention of every attention layer on a probe batch.

    Every `every_n_epochs` epochs, the model is run once (eagerly,
    `training=False`) on a fixed probe batch and the attention weights of
    every attention layer in it are written to TensorBoard: as heatmap images
    per layer and head, and as the mean attention entropy per layer. The
    model is not rewired: each layer whose `call` accepts
    `return_attention_scores` (kerasattn's layers and blocks,
    `keras.layers.MultiHeadAttention`, `keras.layers.Attention`, or a user's
    layer following the same convention), however deeply nested, has its
    `call` wrapped for that one forward pass and restored afterwards. A block
    that only passes on the scores of an attention layer inside it (such as
    `TransformerEncoderBlock`) is reported through that inner layer, so
    a map appears once, under the path of the layer that computes it.

    The summaries go to `log_dir/attention`, a run beside the `train` and
    `validation` runs of `keras.callbacks.TensorBoard` given the same
    `log_dir`, at step = epoch (0-based, as that callback's `epoch_*`
    scalars), so both show up together in one `tensorboard --logdir log_dir`.

    - Images, tag `attention/<layer path>/head_<h>` for multi-head weights
      `(B, N, Tq, Tk)`, else `attention/<layer path>`: one image per probe
      example (up to `max_examples`), query positions down, keys across.
      Single-head `(B, Tq, Tk)` weights give one map, pooling weights
      `(B, T)` / `(B, K, T)` a strip of 1 or `K` rows, cross-layer weights
      `(B, T, L)` positions down and layers across. Masked cells are drawn
      hatched grey, not as weights: those whose query or key is padding
      (from the masks the layer received, e.g. an `Embedding(mask_zero=True)`
      mask) and those the layer gave exactly zero weight (masked keys, fully
      masked queries, causal future positions). The colour scale of each
      image runs from 0 to its largest unmasked weight.
    - Scalars, tag `attention_entropy/<layer path>`: the mean entropy in
      nats, `-Σ w log w` over the keys, averaged over every probe example,
      head and query row that is not entirely masked (padded queries are
      left out); between 0 (each query attends to one key) and `log(n)`
      (uniform over `n` keys). Not normalised by `log(n)`, so maps of
      different lengths are not directly comparable.
      Left out for a layer whose weights are not distributions
      (un-normalised scores).

    - Images, tag `explanation/<method>` for each of `explanation_methods`
      (`kerasattn.explain`; attention rollout by default): one strip per
      probe example of every token's score for the model's output (for a
      classifier, its predicted class), padding hatched. A method the model
      cannot be explained with (no pooling to read out, no class outputs for
      a gradient method) is left out with one warning.

    A layer called several times in one forward pass gets `/call_<k>`
    appended to its path.

    Args:
        probe_inputs: what the model is called with: an array, or a list or
            dict of arrays, as for `model.predict`; a few examples.
        log_dir: the TensorBoard log directory (the same as
            `keras.callbacks.TensorBoard`'s, if used).
        every_n_epochs: log after epochs `0, n, 2n, ...`. Defaults to 1.
        max_examples: how many probe examples get images (the entropy uses
            them all). Defaults to 3.
        probe_tokens: optional token strings per probe example (a list of `B`
            lists) to label the heatmap axes with. An axis is labelled when
            its length is the probe's sequence length: the second dimension
            of `probe_inputs` when it is one 2-D array, else the longest
            list. Lists may be shorter than that (padding left unlabelled).
        explanation_methods: `kerasattn.explain.METHODS` to draw per epoch,
            such as `("rollout", "integrated_gradients")`; `()` for none.
            Defaults to `("rollout",)`.

    Example:

    ```python
    callbacks = [
        keras.callbacks.TensorBoard(log_dir),
        AttentionMapCallback(x_train[:4], log_dir, every_n_epochs=2),
    ]
    model.fit(x_train, y_train, epochs=10, callbacks=callbacks)
    ```
    """

    def __init__(
        self,
        probe_inputs: Any,
        log_dir: str | os.PathLike,
        every_n_epochs: int = 1,
        max_examples: int = 3,
        probe_tokens: Optional[Sequence[Sequence[str]]] = None,
        explanation_methods: Sequence[str] = ("rollout",),
    ):
        super().__init__()
        from kerasattn.explain import METHODS

        if isinstance(explanation_methods, str) or any(
                m not in METHODS for m in explanation_methods):
            raise ValueError(f"Expected `explanation_methods` among {METHODS}, "
                             f"received: explanation_methods={explanation_methods!r}")
        self.explanation_methods = list(explanation_methods)
        if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
            raise ValueError(
                f"Expected `log_dir` to be a directory path, received: log_dir={log_dir!r}"
            )
        self.log_dir = os.fspath(log_dir)
        self.every_n_epochs = _validation.positive_int("every_n_epochs", every_n_epochs)
        self.max_examples = _validation.positive_int("max_examples", max_examples)
        self.probe_inputs = tree.map_structure(np.asarray, probe_inputs)
        leaves = tree.flatten(self.probe_inputs)
        if not leaves or any(leaf.ndim == 0 for leaf in leaves):
            raise ValueError(
                "Expected `probe_inputs` to be an array, or a list or dict of arrays, "
                f"with a batch dimension, received: {type(probe_inputs).__name__}"
            )
        batches = {len(leaf) for leaf in leaves}
        if len(batches) != 1 or 0 in batches:
            raise ValueError(
                "Expected `probe_inputs` with one non-zero batch size, received: "
                f"batch sizes {sorted(batches)}"
            )
        self._batch_size = batches.pop()
        self.probe_tokens = self._check_tokens(probe_tokens)
        self._layers: Optional[List] = None
        self._writer = None

    def _check_tokens(self, probe_tokens):
        if probe_tokens is None:
            return None
        if isinstance(probe_tokens, str) or not isinstance(probe_tokens, Sequence) or any(
            isinstance(tokens, str)
            or not isinstance(tokens, Sequence)
            or not all(isinstance(token, str) for token in tokens)
            for tokens in probe_tokens
        ):
            raise ValueError(
                "Expected `probe_tokens` to be a list of lists of token strings, "
                f"received: probe_tokens={probe_tokens!r:.80}"
            )
        if len(probe_tokens) != self._batch_size:
            raise ValueError(
                f"Expected `probe_tokens` with one list per probe example ({self._batch_size}), "
                f"received: {len(probe_tokens)} lists"
            )
        longest = max(len(tokens) for tokens in probe_tokens)
        single = not isinstance(self.probe_inputs, (list, tuple, dict))
        if single and self.probe_inputs.ndim == 2:
            self._label_length = self.probe_inputs.shape[1]
        else:
            self._label_length = longest
        if longest > self._label_length:
            raise ValueError(
                f"Expected `probe_tokens` lists of at most {self._label_length} tokens "
                f"(the probe's sequence length), received: a list of {longest}"
            )
        return [list(tokens) + [""] * (self._label_length - len(tokens)) for tokens in probe_tokens]

    # -- Keras hooks -----------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._layers = _collect.find_attention_layers(self.model)
        if not self._layers:
            raise ValueError(
                "Expected a model with at least one layer whose `call` accepts "
                f"`return_attention_scores`, received: model {self.model.name!r} with none"
            )

    def on_epoch_end(self, epoch, logs=None):
        if epoch % self.every_n_epochs == 0:
            self.write_summaries(epoch)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- logging ---------------------------------------------------------------

    def write_summaries(self, step: int) -> None:
        """Collects the probe's attention maps and writes them at `step`."""
        if self._layers is None:
            self._layers = _collect.find_attention_layers(self.model)
        maps = _collect.collect_attention(self.model, self.probe_inputs, self._layers)
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, RUN_NAME))
        with self._writer.as_default():
            for attention_map in maps:
                self._write_images(attention_map, step)
                entropy = _collect.mean_entropy(attention_map)
                if entropy is not None:
                    tag = f"attention_entropy/{_tag(attention_map.path)}"
                    tf.summary.scalar(tag, entropy, step=step)
            for method in list(self.explanation_methods):
                self._write_explanation(method, step)
        self._writer.flush()

    def _write_explanation(self, method: str, step: int) -> None:
        from kerasattn import explain

        try:
            valid = explain.padding_of(self.probe_inputs)
            scores = explain.explain(self.model, self.probe_inputs, method)
        except ValueError as error:
            warnings.warn(f"AttentionMapCallback leaves out the {method} explanation: {error}")
            self.explanation_methods.remove(method)
            return
        examples = min(self.max_examples, self._batch_size)
        images = np.stack([
            _heatmap.render(scores[b][None], ~valid[b][None], f"{method} · example {b}",
                            col_labels=self._labels(b, scores.shape[1]), row_name="",
                            col_name="token")
            for b in range(examples)
        ])
        tf.summary.image(f"explanation/{method}", images, step=step, max_outputs=examples)

    def _labels(self, example: int, length: int):
        if self.probe_tokens is None or length != self._label_length:
            return None
        return self.probe_tokens[example]

    def _write_images(self, attention_map: _collect.AttentionMap, step: int) -> None:
        examples = min(self.max_examples, self._batch_size)
        _, heads, rows, cols = attention_map.weights.shape
        for head in range(heads):
            tag = f"attention/{_tag(attention_map.path)}"
            title = attention_map.path
            if attention_map.multi_head:
                tag += f"/head_{head}"
                title += f" · head {head}"
            images = np.stack(
                [
                    _heatmap.render(
                        attention_map.weights[b, head],
                        attention_map.masked[b, head],
                        f"{title} · example {b}",
                        row_labels=self._labels(b, rows),
                        col_labels=self._labels(b, cols),
                    )
                    for b in range(examples)
                ]
            )
            tf.summary.image(tag, images, step=step, max_outputs=examples)
