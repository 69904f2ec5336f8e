"""Exporting a trained `Translator` for serving, every artifact checked against Keras.

`export_translator(model, out_dir)` writes, into a temporary folder beside
`out_dir` that is renamed to `out_dir` only once every check has passed:

- `saved_model/`: a TensorFlow SavedModel whose signatures hold the whole
  translation, with the beam width, maximum length and length penalty fixed
  at export (without a `max_length`, the string signatures decode each
  batch as long as `Translator.translate` would, `default_max_length` of
  its longest source: caches and loop sized to the batch, 3x faster on
  Multi30k than `target_sequence_length`):

  - `translate` (also `serving_default`): `texts` `tf.string (B,)` →
    `{"translations": tf.string (B,)}`: SentencePiece tokenisation, the
    encoder, cached beam search and detokenisation in the graph
    (`Translator.translate_function`). Sources longer than the
    preprocessor's `source_sequence_length` are cut, bytes that are not
    UTF-8 read as U+FFFD, a blank source translates to `""`: bad input is a
    defined result, never an error inside the graph;
  - `translate_greedy`: the same with greedy search;
  - `generate_ids`, `generate_ids_greedy`: `source_ids` int32 `(B, Ts)` and
    `source_padding_mask` bool `(B, Ts)` → `{"target_ids": int32 (B,
    max_length + 1)}`: `[START]`, the translation, `[END]`, then padding (as
    `Translator.generate`);
  - `encode` and `decode_step`: one step of the cached decoder, the graphs
    the ONNX files are converted from (see below).
- `translator_greedy.tflite` and `translator_beam.tflite` (LiteRT, built-in
  ops only, no Flex delegate): the `generate_ids*` signatures, the whole
  decoding loop in one file, batch and source length dynamic. They take
  ids, not strings: tensorflow-text's SentencePiece ops do not convert to
  TFLite built-ins (see the subword section of `benchmarks/RESULTS.md`), so
  the app tokenises with `source.model` (any SentencePiece runtime) and
  detokenises with `target.model` (the same file for a joint vocabulary).
- `encoder.onnx` and `decoder_step.onnx` (tf2onnx): the encoder with every
  decoder layer's cross-attention keys and values, and one cached decoder
  step. `OnnxGreedyDecoder` is a NumPy loop over them with onnxruntime.
- `source.model` (and `target.model` with a separate target vocabulary):
  the SentencePiece models; ids `[PAD]` 0, `[UNK]` 1, `[START]` 2, `[END]` 3.
- `manifest.json`: the decoding settings, the special ids, and per artifact
  its path, size, runtime, signature, parity with Keras on the sample
  sentences and median latency of one sentence and of the whole sample.

Parity (`measure_parity`, also usable on a validation file): every
artifact's greedy ids must equal `Translator.generate`'s token for token on
the same batches; the beam-search artifacts must keep their BLEU within
`beam_bleu_tolerance` of Keras's (against the references when given, else
against Keras's own beam translations).

Example:

```python
from zoo.translator import Translator
from zoo.translator.export import export_translator

model = Translator.from_preset("runs/multi30k/preset")
manifest = export_translator(model, "exported/", beam=4, max_length=64)

import tensorflow as tf
served = tf.saved_model.load("exported/saved_model")
served.signatures["translate"](texts=tf.constant(["A dog runs."]))["translations"]
```
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

import kerasattn
from kerasattn.export import MANIFEST
from kerasattn.export import ExportError
from kerasattn.export import LiteRTRuntime
from kerasattn.export import OnnxRuntime
from kerasattn.export import SavedModelRuntime
from kerasattn.export import check_out_dir
from kerasattn.export import convert_onnx
from kerasattn.export import convert_tflite
from kerasattn.export import float32_copy
from kerasattn.export import median_latency_ms
from kerasattn.export import size_bytes
from kerasattn.export import staged
from kerasattn.layers import _validation
from kerasattn.ops.tracing import export_graph
from kerasattn.text import UNKNOWN_ID
from zoo.translator.model import Translator
from zoo.translator.preprocessor import END_ID
from zoo.translator.preprocessor import MODEL_ASSETS
from zoo.translator.preprocessor import PAD_ID
from zoo.translator.preprocessor import START_ID

SAVED_MODEL = "saved_model"
TFLITE = {"greedy": "translator_greedy.tflite", "beam": "translator_beam.tflite"}
ONNX_ENCODER = "encoder.onnx"
ONNX_DECODER_STEP = "decoder_step.onnx"
# Used to verify when no sample sentences are given: the domain of the Multi30k preset.
DEFAULT_SAMPLE_TEXTS = (
    "A dog runs in the park.",
    "Two young men are playing football on a green field.",
    "A woman in a red dress sits on a bench.",
    "People walk down a busy street in the city at night.",
)
# Inputs the `translate` signature must survive with a defined result.
BAD_INPUTS = {
    "empty": b"",
    "2000_tokens": " ".join(["dog"] * 2000).encode(),
    "not_utf8": b"A dog \xff\xfe runs.",
}
_SOURCE = ("source_ids", "source_padding_mask")
_CACHE_PARTS = ("keys", "values")  # a decoder layer's cache, heads first


def _decoding_graphs(model: Translator):
    """`encode` and `decode_step` as `tf.function`s of flat named tensors (ONNX's inputs).

    `encode`: `encoder_token_ids`, `encoder_padding_mask` →
    `cross_attention_cache_<i>_keys` `(B, K, key_dim, Ts)` and `_values`
    `(B, K, Ts, key_dim)` per decoder layer (with additive cross-attention
    `cross_attention_cache_<i>`, the encoder outputs `(B, Ts, d)`).
    `decode_step`: `token_ids (B, 1)`, `index ()`, `encoder_padding_mask`,
    `cache_<i>_keys` `(B, K, key_dim, S)`, `cache_<i>_values`
    `(B, K, S, key_dim)` (`S` the positions to decode) and the
    cross-attention caches →
    `logits (B, V)` and `updated_cache_<i>_keys` and `_values` (outputs named
    apart from the inputs: tf2onnx cannot convert a graph whose output shares
    an input's name).
    """
    import tensorflow as tf

    backbone = model.backbone
    layers = backbone.num_decoder_layers
    source = [tf.TensorSpec((None, None), tf.int32, name="encoder_token_ids"),
              tf.TensorSpec((None, None), tf.bool, name="encoder_padding_mask")]

    @tf.function(input_signature=source)
    def encode(encoder_token_ids, encoder_padding_mask):
        encoded = backbone.encode(encoder_token_ids, encoder_padding_mask)
        return _named_caches("cross_attention_cache",
                             backbone.cross_attention_cache(encoded))

    # Batch and length dynamic: the cross-attention caches as `encode` gives them, the
    # self-attention caches with the axes that differ between two lengths.
    specs = {"token_ids": tf.TensorSpec((None, 1), tf.int32, name="token_ids"),
             "index": tf.TensorSpec((), tf.int32, name="index"),
             "encoder_padding_mask": source[1]}
    for name, tensor in encode.get_concrete_function().structured_outputs.items():
        specs[name] = tf.TensorSpec(tensor.shape, tf.float32, name=name)
    shorter, longer = (_named_caches("cache", backbone.initial_cache(1, length))
                       for length in (2, 3))
    for name, tensor in shorter.items():
        shape = [None] + [size if size == other else None for size, other in
                          zip(tensor.shape[1:], longer[name].shape[1:])]
        specs[name] = tf.TensorSpec(shape, tf.float32, name=name)

    @tf.function(input_signature=[specs])
    def decode_step(inputs):
        features, updated = backbone.decode_step(
            inputs["token_ids"], inputs["index"], _unnamed_caches(inputs, "cache", layers),
            _unnamed_caches(inputs, "cross_attention_cache", layers),
            inputs["encoder_padding_mask"])
        return {"logits": model._logits(features)[:, 0],
                **_named_caches("updated_cache", updated)}

    return encode, decode_step


def _named_caches(prefix: str, caches) -> dict:
    """Per-layer caches as flat named tensors: `<prefix>_<i>_keys` and `_values` of a
    `(keys, values)` pair, `<prefix>_<i>` of one tensor (additive cross-attention's)."""
    named = {}
    for i, layer_cache in enumerate(caches):
        if isinstance(layer_cache, (tuple, list)):
            named.update({f"{prefix}_{i}_{suffix}": part
                          for suffix, part in zip(_CACHE_PARTS, layer_cache)})
        else:
            named[f"{prefix}_{i}"] = layer_cache
    return named


def _unnamed_caches(inputs: dict, prefix: str, layers: int) -> tuple:
    """`_named_caches`' inverse."""
    return tuple(tuple(inputs[f"{prefix}_{i}_{suffix}"] for suffix in _CACHE_PARTS)
                 if f"{prefix}_{i}" not in inputs else inputs[f"{prefix}_{i}"]
                 for i in range(layers))


def _named(output: str, function, input_signature: list):
    """`function` as a concrete function whose one output is named `output`."""
    import tensorflow as tf

    def named(*args):
        return {output: function(*args)}

    return tf.function(named, input_signature=input_signature).get_concrete_function()


def _ids_signature() -> list:
    """The input signature of the `generate_ids*` signatures: source ids and mask."""
    import tensorflow as tf

    return [tf.TensorSpec((None, None), tf.int32, name=_SOURCE[0]),
            tf.TensorSpec((None, None), tf.bool, name=_SOURCE[1])]


def _save_signatures(model: Translator, path: str, make_signatures) -> None:
    """A SavedModel at `path` of the signatures `make_signatures()` returns
    (name -> concrete function), traced under `export_graph`."""
    import tensorflow as tf

    # `tf.saved_model.save` of a module holding the model's layers: keras.export.ExportArchive
    # writes every variable twice (its `variables` and `_all_variables`), and the model
    # itself would bring its optimizer's.
    module = tf.Module()
    module.layers = list(model.layers)
    try:
        with export_graph():
            tf.saved_model.save(module, path, signatures=make_signatures())
    except Exception as error:
        raise ExportError(f"saved_model: could not write the SavedModel: {error}",
                          "conversion") from error


def _write_saved_model(model: Translator, path: str, beam: int, max_length: int,
                       length_penalty: float, translate_max_length: Optional[int]) -> None:
    import tensorflow as tf

    texts = tf.TensorSpec((None,), tf.string, name="texts")

    def signatures():
        named = {}
        for name, width in (("translate", beam), ("translate_greedy", 1)):
            named[name] = _named("translations", model.translate_function(
                width, translate_max_length, length_penalty), [texts])
        for name, width in (("generate_ids", beam), ("generate_ids_greedy", 1)):
            named[name] = _named("target_ids", model.decoding_function(
                width, max_length + 1, length_penalty), _ids_signature())
        encode, decode_step = _decoding_graphs(model)
        named["encode"] = encode.get_concrete_function()
        named["decode_step"] = decode_step.get_concrete_function()
        named["serving_default"] = named["translate"]
        return named

    _save_signatures(model, path, signatures)


def export_greedy_litert(model: Translator, out_dir: Union[str, os.PathLike],
                         sample_texts: Optional[Sequence[str]] = None,
                         max_length: Optional[int] = None) -> str:
    """Writes `translator_greedy.tflite` alone, checked against Keras; returns its path.

    The file `export_translator` writes under that name (float32, the whole
    greedy decoding loop from ids to ids), without the other artifacts:
    what `zoo prune translator` times before and after pruning.

    Args:
        model: a `Translator` with its preprocessor.
        out_dir: the folder to create (it must not exist); it also gets the
            `saved_model/` the file is converted from.
        sample_texts: source sentences whose greedy ids must equal
            `Translator.generate`'s; `None` for `DEFAULT_SAMPLE_TEXTS`.
        max_length: the most target tokens (the end token included); `None`
            for the preprocessor's `target_sequence_length`, as
            `export_translator`'s file.

    Returns:
        The path of `out_dir/translator_greedy.tflite`.

    Raises:
        ExportError: for a failed conversion, or greedy ids that differ from
            Keras's; nothing is left behind.

    Example:

    ```python
    path = export_greedy_litert(model, "timed/")
    LiteRTRuntime(path).run({"source_ids": ids, "source_padding_mask": ids != 0})
    ```
    """
    if not isinstance(model, Translator) or model.preprocessor is None:
        raise ExportError("Expected `model` to be a Translator with a preprocessor, received: "
                          f"{type(model).__name__}")
    texts = list(DEFAULT_SAMPLE_TEXTS if sample_texts is None else sample_texts)
    out_dir = check_out_dir(out_dir, overwrite=False)
    model = float32_copy(model)
    length = (max_length or model.preprocessor.target_sequence_length) + 1
    with staged(out_dir, overwrite=False) as staging:
        saved_model = os.path.join(staging, SAVED_MODEL)
        _save_signatures(model, saved_model, lambda: {"generate_ids_greedy": _named(
            "target_ids", model.decoding_function(1, length), _ids_signature())})
        path = os.path.join(staging, TFLITE["greedy"])
        with open(path, "wb") as file:
            file.write(convert_tflite(saved_model, "float32", model,
                                      signature="generate_ids_greedy"))
        runtime = LiteRTRuntime(path)
        for _, features in _batches(model, texts, len(texts)):
            want = np.asarray(model.generate(*(features[n] for n in _SOURCE), max_length=length))
            got = next(iter(runtime.run(features).values()))
            differ = int(sum(not np.array_equal(a, b) for a, b in zip(got, want)))
            if differ:
                raise ExportError(f"tflite greedy: greedy search's ids differ from the Keras "
                                  f"model's on {differ} of {len(texts)} sentences",
                                  "verification")
    return os.path.join(out_dir, TFLITE["greedy"])


class OnnxGreedyDecoder:
    """Greedy decoding with `encoder.onnx` and `decoder_step.onnx` in onnxruntime and NumPy.

    The loop of `kerasattn.generation.greedy_search`: the encoder runs once
    (every decoder layer's cross-attention keys and values), then the
    decoder step once per position on the last token, its key/value caches
    carried from step to step; a row that emits `[END]` is padded after it,
    and the loop stops once every row has ended.

    Args:
        encoder: path of `encoder.onnx`.
        decoder_step: path of `decoder_step.onnx`.
        num_threads: onnxruntime's intra- and inter-op threads.

    Example:

    ```python
    decoder = OnnxGreedyDecoder("exported/encoder.onnx", "exported/decoder_step.onnx")
    ids = decoder.generate(source_ids, source_ids != 0, max_length=33)  # (B, 33)
    ```
    """

    def __init__(self, encoder: str, decoder_step: str, num_threads: int = 1):
        self.encoder = OnnxRuntime(encoder, num_threads)
        self.decoder_step = OnnxRuntime(decoder_step, num_threads)
        inputs = self.decoder_step.signature()["inputs"]
        # `cache_<i>_keys` (B, K, key_dim, length), `cache_<i>_values` (B, K, length, key_dim).
        self._caches = {i["name"]: i["shape"] for i in inputs if i["name"].startswith("cache_")}
        self.description = self.encoder.description

    def generate(self, source_ids: np.ndarray, source_padding_mask: np.ndarray,
                 max_length: int) -> np.ndarray:
        """int32 `(B, max_length)` ids: `[START]`, the translation, `[END]`, padding."""
        batch = len(source_ids)
        cross = self.encoder.run({"encoder_token_ids": source_ids,
                                  "encoder_padding_mask": source_padding_mask})
        # Batch and length are the dynamic axes.
        caches = {name: np.zeros([batch] + [size if isinstance(size, int) else max_length
                                            for size in shape[1:]], np.float32)
                  for name, shape in self._caches.items()}
        ids = np.full((batch, max_length), PAD_ID, np.int32)
        ids[:, 0] = START_ID
        finished = np.zeros(batch, bool)
        for index in range(1, max_length):
            if finished.all():
                break
            outputs = self.decoder_step.run({
                "token_ids": ids[:, index - 1:index], "index": np.array(index - 1, np.int32),
                "encoder_padding_mask": source_padding_mask, **caches, **cross})
            caches = {name: outputs[f"updated_{name}"] for name in caches}
            token = np.argmax(outputs["logits"], axis=-1).astype(np.int32)  # first on ties
            token = np.where(finished, PAD_ID, token)
            finished |= token == END_ID
            ids[:, index] = token
        return ids


def _batches(model: Translator, texts: Sequence[str], batch_size: int):
    """`(indices, features)` of `texts` sorted by length, `batch_size` at a time (as
    `Translator.translate` batches them)."""
    order = np.argsort(model.preprocessor.source_lengths(list(texts)), kind="stable")
    for start in range(0, len(texts), batch_size):
        indices = order[start:start + batch_size]
        features = model.preprocessor([texts[i] for i in indices])
        yield indices, {name: features[key].numpy() for name, key in
                        zip(_SOURCE, ("encoder_token_ids", "encoder_padding_mask"))}


def _runners(folder: str, manifest: Dict[str, Any]) -> Dict[str, Dict[str, Any]]:
    """Per artifact, `{"greedy": ids_fn, "beam": ids_fn}` (the ones it has), each mapping
    `{source_ids, source_padding_mask}` to target ids."""
    max_length = manifest["max_length"] + 1
    artifacts = manifest["artifacts"]
    runners: Dict[str, Dict[str, Any]] = {}
    if SAVED_MODEL in artifacts:
        path = os.path.join(folder, SAVED_MODEL)
        greedy = SavedModelRuntime(path, "generate_ids_greedy")
        beam = greedy.with_signature("generate_ids")
        runners[SAVED_MODEL] = {"greedy": lambda f: greedy.run(f)["target_ids"],
                                "beam": lambda f: beam.run(f)["target_ids"]}
    for mode, name in TFLITE.items():
        if f"tflite_{mode}" in artifacts:
            runtime = LiteRTRuntime(os.path.join(folder, name))
            runners.setdefault("tflite", {})[mode] = (
                lambda f, runtime=runtime: next(iter(runtime.run(f).values())))
    if "onnx" in artifacts:
        decoder = OnnxGreedyDecoder(os.path.join(folder, ONNX_ENCODER),
                                    os.path.join(folder, ONNX_DECODER_STEP))
        runners["onnx"] = {"greedy": lambda f: decoder.generate(*(f[n] for n in _SOURCE),
                                                                max_length)}
    return runners


def _bleu(hypotheses: List[str], references: List[str]) -> float:
    import sacrebleu

    return round(sacrebleu.corpus_bleu(hypotheses, [references]).score, 2)


def measure_parity(folder: Union[str, os.PathLike], model: Translator, sources: Sequence[str],
                   references: Optional[Sequence[str]] = None,
                   batch_size: int = 32) -> Dict[str, Any]:
    """How closely an exported translator's artifacts follow the Keras model.

    Every artifact decodes `sources` in the batches the Keras model decodes
    them in (sorted by length, `batch_size` at a time), with the export's
    beam width and maximum length; each is compared with
    `Translator.generate` on the same batch.

    Args:
        folder: a folder `export_translator` wrote.
        model: the Keras translator it was exported from.
        sources: the source sentences (e.g. a validation file's).
        references: optional reference translations, for BLEU.
        batch_size: sentences decoded together.

    Returns:
        `{"sentences", "beam", "max_length", "keras": {"greedy_bleu",
        "beam_bleu"} (with references), "artifacts": {name: {...}}}`, per
        artifact (`saved_model`, `tflite`, `onnx`) and search it has:
        `greedy_identical` / `beam_identical` (rows whose ids equal Keras's
        token for token), `greedy_identical_fraction` /
        `beam_identical_fraction`, and for beam search `beam_bleu` and
        `beam_bleu_difference` from Keras's (against the references, or,
        without them, against Keras's beam translations themselves); for
        the SavedModel also `greedy_strings_identical` /
        `beam_strings_identical`, the sentences its `translate_greedy` /
        `translate` signatures (strings to strings) translate as Keras's
        ids detokenised (generated as long as the signatures decode).

    Example:

    ```python
    pairs = kerasattn.data.read_parallel_text("val.tsv")
    numbers = measure_parity("exported/", model, pairs.sources, pairs.targets)
    numbers["artifacts"]["tflite"]["greedy_identical_fraction"]  # 1.0
    ```
    """
    folder = os.fspath(folder)
    with open(os.path.join(folder, MANIFEST), encoding="utf-8") as file:
        manifest = json.load(file)
    sources = list(sources)
    if not sources or not all(isinstance(text, str) and text.strip() for text in sources):
        raise ExportError("Expected `sources` to be non-empty sentences, received: "
                          f"{sources[:3]!r}")
    if references is not None and len(references) != len(sources):
        raise ExportError(f"Expected one reference per source ({len(sources)}), received: "
                          f"{len(references)}")
    _validation.positive_int("batch_size", batch_size)
    beam, max_length = manifest["beam"], manifest["max_length"] + 1
    penalty = manifest["length_penalty"]
    runners = _runners(folder, manifest)
    searches = {"greedy": 1, "beam": beam}
    keras_ids: Dict[str, List[Optional[np.ndarray]]] = {s: [None] * len(sources) for s in searches}
    got = {name: {s: [None] * len(sources) for s in runs} for name, runs in runners.items()}
    strings = {}
    if SAVED_MODEL in manifest["artifacts"]:
        path = os.path.join(folder, SAVED_MODEL)
        strings = {"greedy": SavedModelRuntime(path, "translate_greedy"),
                   "beam": SavedModelRuntime(path, "translate")}
    got_strings: Dict[str, List[Optional[str]]] = {s: [None] * len(sources) for s in strings}
    # The string signatures' length: fixed, or (None) each batch's default_max_length.
    string_length = manifest.get("translate_max_length", manifest["max_length"])
    string_length = None if string_length is None else string_length + 1
    keras_string_ids = {s: [None] * len(sources) for s in strings}
    for indices, features in _batches(model, sources, batch_size):
        for search, width in searches.items():
            want = np.asarray(model.generate(*(features[n] for n in _SOURCE), beam=width,
                                             max_length=max_length, length_penalty=penalty))
            for row, index in enumerate(indices):
                keras_ids[search][index] = want[row]
            if search in strings:
                outputs = strings[search].run(
                    {"texts": np.array([sources[i] for i in indices], object)})
                if string_length != max_length:
                    want = np.asarray(model.generate(
                        *(features[n] for n in _SOURCE), beam=width, max_length=string_length,
                        length_penalty=penalty))
                for row, (text, index) in enumerate(zip(outputs["translations"], indices)):
                    got_strings[search][index] = text.decode("utf-8", "replace")
                    keras_string_ids[search][index] = want[row]
            for name, runs in runners.items():
                if search in runs:
                    ids = np.asarray(runs[search](features))
                    for row, index in enumerate(indices):
                        got[name][search][index] = ids[row]

    def texts(ids):
        return model.preprocessor.detokenize(np.stack(ids)[:, 1:])

    keras_texts = {search: texts(ids) for search, ids in keras_ids.items()}
    result: Dict[str, Any] = {"sentences": len(sources), "beam": beam,
                              "max_length": manifest["max_length"], "artifacts": {}}
    if references is not None:
        result["keras"] = {f"{s}_bleu": _bleu(keras_texts[s], list(references))
                           for s in searches}
    for name, decoded in got.items():
        entry: Dict[str, Any] = {}
        for search, ids in decoded.items():
            same = sum(np.array_equal(a, b) for a, b in zip(ids, keras_ids[search]))
            entry[f"{search}_identical"] = int(same)
            entry[f"{search}_identical_fraction"] = round(same / len(sources), 6)
            if search == "beam":
                against = list(references) if references is not None else keras_texts["beam"]
                bleu = _bleu(texts(ids), against)
                entry["beam_bleu"] = bleu
                # Keras's own score on the same references (100, or 0 for empty output, alone).
                entry["beam_bleu_difference"] = round(
                    abs(bleu - _bleu(keras_texts["beam"], against)), 2)
        if name == SAVED_MODEL:
            # The string signatures: tokenisation and detokenisation in the graph too.
            for search, translations in got_strings.items():
                entry[f"{search}_strings_identical"] = sum(
                    a == b for a, b in zip(translations, texts(keras_string_ids[search])))
        result["artifacts"][name] = entry
    return result


def _check_parity(parity: Dict[str, Any], tolerance: float) -> None:
    for name, entry in parity["artifacts"].items():
        for key, what in (("greedy_identical", "greedy search's ids"),
                          ("greedy_strings_identical", "translate_greedy's translations")):
            if entry.get(key, parity["sentences"]) != parity["sentences"]:
                raise ExportError(
                    f"{name}: {what} differ from the Keras model's on "
                    f"{parity['sentences'] - entry[key]} of {parity['sentences']} sentences",
                    "verification")
        if entry.get("beam_bleu_difference", 0.0) > tolerance:
            raise ExportError(
                f"{name}: beam search's BLEU differs from the Keras model's by "
                f"{entry['beam_bleu_difference']}, above the allowed {tolerance}", "verification")


def _latency(runner, features: Dict[str, np.ndarray], runs: int) -> Dict[str, float]:
    """Median ms of one sentence and of the whole sample batch."""
    one = {name: array[:1] for name, array in features.items()}
    return {f"batch_{len(next(iter(f.values())))}":
            round(median_latency_ms(lambda f=f: runner(f), runs), 3) for f in (one, features)}


def _saved_model_details(path: str, texts: List[str], latency_runs: int) -> Dict[str, Any]:
    """The SavedModel's manifest entry: its signatures (the string ones timed) and what
    `translate` makes of `BAD_INPUTS`."""
    signatures: Dict[str, Any] = {}
    runtime = SavedModelRuntime(path, "translate")
    for name in ("translate", "translate_greedy", "generate_ids", "generate_ids_greedy",
                 "encode", "decode_step"):
        signatures[name] = runtime.with_signature(name).signature()
        if name.startswith("translate"):
            signatures[name]["latency_ms"] = _latency(
                runtime.with_signature(name).run, {"texts": np.array(texts, object)},
                latency_runs)
    signatures["serving_default"] = {"same_as": "translate"}
    probe = runtime.run({"texts": np.array(list(BAD_INPUTS.values()), object)})["translations"]
    return {
        "runtime": runtime.description,
        "signatures": signatures,
        "bad_inputs": {
            name: {"input": repr(text if len(text) < 40 else text[:37] + b"..."),
                   "translation": output.decode("utf-8", "replace")}
            for (name, text), output in zip(BAD_INPUTS.items(), probe)},
    }


def export_translator(
    model: Translator,
    out_dir: Union[str, os.PathLike],
    sample_texts: Optional[Sequence[str]] = None,
    beam: int = 4,
    max_length: Optional[int] = None,
    length_penalty: float = 0.6,
    beam_bleu_tolerance: float = 0.1,
    parity_data: Optional[Any] = None,
    latency_runs: int = 10,
    overwrite: bool = False,
) -> Dict[str, Any]:
    """Exports a `Translator` to SavedModel, TFLite and ONNX, each checked against Keras.

    The files written, and the inputs and outputs of each, are listed in
    this module's docstring.

    Args:
        model: a (trained) `Translator` with its preprocessor.
        out_dir: the folder to create.
        sample_texts: source sentences to verify on; `None` for
            `DEFAULT_SAMPLE_TEXTS`.
        beam: the beam width of `translate`, `generate_ids` and
            `translator_beam.tflite` (fixed in the graphs; greedy search has
            its own signatures and file).
        max_length: the most target tokens (the end token included);
            `None` for the preprocessor's `target_sequence_length` in the
            ids signatures and files, and for each batch's
            `default_max_length` in the string signatures.
        length_penalty: GNMT's `alpha` of beam search.
        beam_bleu_tolerance: the most BLEU a beam-search artifact may lose
            or gain against Keras on the sample texts (and `parity_data`).
        parity_data: optional sentence pairs (a `kerasattn.data.ParallelText`,
            such as the validation file) on which `measure_parity` also runs,
            checked as the sample texts are; the manifest records the numbers
            under `"parity_on_data"`.
        latency_runs: timed runs per artifact and batch (the median is kept).
        overwrite: whether an existing `out_dir` (an empty folder or a
            previous export, nothing else) is replaced once this one passes.

    Returns:
        The manifest, as `out_dir/manifest.json` holds it.

    Raises:
        ExportError: for bad arguments, a failed conversion, or an artifact
            whose greedy ids differ from Keras's (or whose beam BLEU is off
            by more than `beam_bleu_tolerance`); nothing is left behind.

    Example:

    ```python
    manifest = export_translator(model, "exported/", beam=4, max_length=64)
    manifest["artifacts"]["tflite_greedy"]["parity"]["greedy_identical_fraction"]  # 1.0
    ```
    """
    if not isinstance(model, Translator) or model.preprocessor is None:
        raise ExportError("Expected `model` to be a Translator with a preprocessor, received: "
                          f"{type(model).__name__}")
    try:
        beam = _validation.positive_int("beam", beam)
        max_length = _validation.positive_int("max_length", max_length, allow_none=True)
        latency_runs = _validation.positive_int("latency_runs", latency_runs)
    except ValueError as error:
        raise ExportError(str(error)) from None
    for name, value in (("length_penalty", length_penalty),
                        ("beam_bleu_tolerance", beam_bleu_tolerance)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
            raise ExportError(f"Expected `{name}` to be a number >= 0, received: {name}={value!r}")
    length_penalty, beam_bleu_tolerance = float(length_penalty), float(beam_bleu_tolerance)
    translate_max_length = max_length
    max_length = max_length or model.preprocessor.target_sequence_length
    texts = list(DEFAULT_SAMPLE_TEXTS if sample_texts is None else sample_texts)
    if isinstance(sample_texts, (str, bytes)) or not texts or not all(
            isinstance(text, str) and text.strip() for text in texts):
        raise ExportError("Expected `sample_texts` to be a list of non-empty sentences, "
                          f"received: sample_texts={sample_texts!r:.80}")
    out_dir = check_out_dir(out_dir, overwrite)
    policy = model.backbone.dtype_policy.name
    model = float32_copy(model)
    settings = {"beam": beam, "max_length": max_length, "length_penalty": length_penalty,
                "translate_max_length": translate_max_length}

    with staged(out_dir, overwrite) as staging:
        saved_model = os.path.join(staging, SAVED_MODEL)
        _write_saved_model(model, saved_model, **settings)
        for mode, name in TFLITE.items():
            signature = "generate_ids" if mode == "beam" else "generate_ids_greedy"
            content = convert_tflite(saved_model, "float32", model, signature=signature)
            with open(os.path.join(staging, name), "wb") as file:
                file.write(content)
        for name, signature in ((ONNX_ENCODER, "encode"), (ONNX_DECODER_STEP, "decode_step")):
            convert_onnx(saved_model, os.path.join(staging, name), signature=signature)
        preprocessor = model.preprocessor
        assets = {MODEL_ASSETS["model"]: preprocessor.source_tokenizer.model}
        if not preprocessor.shared_model:
            assets[MODEL_ASSETS["target_model"]] = preprocessor.target_tokenizer.model
        for name, content in assets.items():
            with open(os.path.join(staging, name), "wb") as file:
                file.write(content)

        artifacts = {
            SAVED_MODEL: {"path": SAVED_MODEL, "format": "saved_model", "takes": "strings"},
            "tflite_greedy": {"path": TFLITE["greedy"], "format": "tflite", "takes": "ids",
                              "search": "greedy"},
            "tflite_beam": {"path": TFLITE["beam"], "format": "tflite", "takes": "ids",
                            "search": f"beam {beam}"},
            "onnx": {"path": [ONNX_ENCODER, ONNX_DECODER_STEP], "format": "onnx",
                     "takes": "ids", "search": "greedy, by OnnxGreedyDecoder's NumPy loop"},
        }
        manifest = {
            "format_version": 1,
            "created_by": f"zoo.translator.export (kerasattn {kerasattn.__version__})",
            "model": model.name,
            "dtype_policy": policy,
            "computed_in": "float32",
            **settings,
            "special_ids": {"pad": PAD_ID, "unk": UNKNOWN_ID, "start": START_ID,
                            "end": END_ID},
            "sentencepiece": {"source": MODEL_ASSETS["model"],
                              "target": (MODEL_ASSETS["model"] if preprocessor.shared_model
                                         else MODEL_ASSETS["target_model"]),
                              "source_sequence_length": preprocessor.source_sequence_length},
            "strings": ("saved_model's translate signatures take and return strings; the "
                        "TFLite and ONNX files take and return ids, since tensorflow-text's "
                        "SentencePiece ops do not convert to TFLite built-in ops: tokenise with "
                        "the source model, prepend nothing, pad with 0, and detokenise the "
                        "output after [START] up to [END] with the target model"),
            "check": ("greedy ids identical to Translator.generate token for token on every "
                      "sample sentence; beam-search BLEU against Keras's beam translations "
                      f"within {beam_bleu_tolerance}"),
            "artifacts": artifacts,
        }
        with open(os.path.join(staging, MANIFEST), "w") as file:
            json.dump(manifest, file, indent=2)

        parity = measure_parity(staging, model, texts)
        _check_parity(parity, beam_bleu_tolerance)
        if parity_data is not None:
            manifest["parity_on_data"] = measure_parity(
                staging, model, parity_data.sources, parity_data.targets)
            _check_parity(manifest["parity_on_data"], beam_bleu_tolerance)
        features = next(_batches(model, texts, len(texts)))[1]
        runners = _runners(staging, manifest)
        for entry in artifacts.values():
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            entry["size_bytes"] = sum(size_bytes(os.path.join(staging, p)) for p in paths)
        artifacts[SAVED_MODEL].update(_saved_model_details(saved_model, texts, latency_runs),
                                      parity=parity["artifacts"][SAVED_MODEL])
        for search, path in TFLITE.items():
            runtime = LiteRTRuntime(os.path.join(staging, path))
            artifacts[f"tflite_{search}"].update(
                runtime=runtime.description, signature=runtime.signature(),
                parity={key: value for key, value in parity["artifacts"]["tflite"].items()
                        if key.startswith(search)},
                latency_ms=_latency(runners["tflite"][search], features, latency_runs))
        decoder = OnnxGreedyDecoder(os.path.join(staging, ONNX_ENCODER),
                                    os.path.join(staging, ONNX_DECODER_STEP))
        artifacts["onnx"].update(
            runtime=decoder.description, parity=parity["artifacts"]["onnx"],
            signature={"encoder": decoder.encoder.signature(),
                       "decoder_step": decoder.decoder_step.signature()},
            latency_ms=_latency(runners["onnx"]["greedy"], features, latency_runs))
        manifest["parity"] = {k: v for k, v in parity.items() if k != "artifacts"}
        with open(os.path.join(staging, MANIFEST), "w") as file:
            json.dump(manifest, file, indent=2)
    return manifest


__all__ = ["OnnxGreedyDecoder", "export_greedy_litert", "export_translator", "measure_parity"]
