"""Subword vocabularies for translation: SentencePiece against WordPiece on Multi30k (issue 23).

Learns each vocabulary from the training sentences (`train.en`, `train.de`)
and measures on the validation sentences:

- exact round trips: the share of sentences `s` with `detokenize(tokenize(s))
  == s`, byte for byte (BLEU is scored on the raw detokenised output);
- subword tokens per sentence, English and German;
- the learning time (wall, both languages' vocabularies for separate ones);
- tokenisation throughput: all training sentences of both languages in
  batches of 1,024 through a `tf.function`, best of five passes.

Rows: SentencePiece (`kerasattn.text.learn_sentencepiece_model`, tokenised
by `SubwordPreprocessor` on tensorflow-text's `SentencepieceTokenizer`; the
same model also on `FastSentencepieceTokenizer`, the op with TFLite
kernels) and WordPiece (`kerasattn.text.learn_wordpiece_vocabulary`, cased,
NFKC, on `FastWordpieceTokenizer`, as `TextPreprocessor` runs it; NFKC
because with NFC the learner makes a no-break space a token, which
`TextPreprocessor` rejects), with one joint vocabulary for both languages or
one per language.

Then TFLite: whether each tokenizer op converts with built-in ops only
(`TFLITE_BUILTINS`), string to ids and ids to string, and if not, whether
it converts as a custom op and runs in TensorFlow's LiteRT interpreter with
tensorflow-text's kernels registered (`InterpreterWithCustomOps`; the
`ai-edge-litert` interpreter the exports use takes no custom ops).

    python benchmarks/subword_vocab.py --data ../shared/data/multi30k --vocabulary-size 8000
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)

BATCH = 1024
PASSES = 5


def read_split(path: str):
    from kerasattn import data

    return data.read_parallel_text(path + ".en", path + ".de")


def throughput(tokenize, texts: list[str]) -> float:
    """Sentences per second through `tokenize`, traced once, best of `PASSES`."""
    import tensorflow as tf

    traced = tf.function(tokenize, input_signature=[tf.TensorSpec([None], tf.string)])
    batches = [tf.constant(texts[i: i + BATCH]) for i in range(0, len(texts), BATCH)]
    traced(batches[0])
    best = float("inf")
    for _ in range(PASSES):
        start = time.perf_counter()
        for batch in batches:
            traced(batch)
        best = min(best, time.perf_counter() - start)
    return len(texts) / best


class Candidate:
    """One tokenizer per language (the same object twice for a joint vocabulary)."""

    def __init__(self, name: str, learn_seconds: float, english, german):
        self.name, self.learn_seconds = name, learn_seconds
        self.english, self.german = english, german


def sentencepiece_candidates(train, size: int, model_type: str, joint: bool):
    import tensorflow as tf
    import tensorflow_text as tf_text

    from kerasattn import text

    start = time.perf_counter()
    if joint:
        models = [text.learn_sentencepiece_model(train.sources + train.targets, size, model_type)]
        models *= 2
    else:
        models = [text.learn_sentencepiece_model(texts, size, model_type)
                  for texts in (train.sources, train.targets)]
    seconds = time.perf_counter() - start
    kind = f"SentencePiece {model_type}, {'joint ' if joint else '2 × '}{size}"
    layers = [text.SubwordPreprocessor(model) for model in models]
    yield Candidate(kind, seconds, *[
        (layer.tokenize, layer.detokenize) for layer in layers])
    if model_type == "unigram":
        fast = [tf_text.FastSentencepieceTokenizer(model) for model in models]
        yield Candidate(kind + ", fast op", seconds, *[
            (lambda s, t=t: tf.cast(t.tokenize(s), tf.int32), t.detokenize) for t in fast])


def wordpiece_candidates(train, size: int, joint: bool):
    from kerasattn import text

    def learn(texts):
        return text.learn_wordpiece_vocabulary(
            texts, size, lower_case=False, normalization_form="NFKC")

    start = time.perf_counter()
    if joint:
        vocabularies = [learn(train.sources + train.targets)] * 2
    else:
        vocabularies = [learn(texts) for texts in (train.sources, train.targets)]
    seconds = time.perf_counter() - start
    layers = [text.TextPreprocessor(v, lower_case=False, normalization_form="NFKC")
              for v in vocabularies]
    yield Candidate(
        f"WordPiece, {'joint ' if joint else '2 × '}{size}", seconds,
        *[(layer.tokenize, layer.detokenize) for layer in layers])


def measure(candidate: Candidate, train, val) -> dict:
    import numpy as np

    row = {"name": candidate.name, "learn": candidate.learn_seconds}
    for language, (tokenize, detokenize), texts in (
        ("en", candidate.english, val.sources),
        ("de", candidate.german, val.targets),
    ):
        ids = tokenize(texts)
        back = [t.decode("utf-8") for t in detokenize(ids).numpy()]
        row[f"{language} exact"] = 100 * np.mean([a == b for a, b in zip(back, texts)])
        row[f"{language} tokens"] = float(np.mean(ids.row_lengths().numpy()))
        row[f"{language} example"] = next(
            (f"{a!r} -> {b!r}" for a, b in zip(texts, back) if a != b), "")
    rates = [throughput(candidate.english[0], train.sources),
             throughput(candidate.german[0], train.targets)]
    row["sentences/s"] = len(rates) / sum(1 / r for r in rates)  # over both languages
    return row


def run_with_tensorflow_text_ops(flatbuffer: bytes, sample) -> list:
    """The outputs of a TFLite model run on `sample` with tensorflow-text's kernels."""
    from tensorflow.lite.python.interpreter import InterpreterWithCustomOps
    from tensorflow_text.core.pybinds import tflite_registrar

    interpreter = InterpreterWithCustomOps(
        model_content=flatbuffer, custom_op_registerers=tflite_registrar.SELECT_TFTEXT_OPS
    )
    index = interpreter.get_input_details()[0]["index"]
    interpreter.resize_tensor_input(index, sample.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(index, sample)
    interpreter.invoke()
    return [interpreter.get_tensor(o["index"]) for o in interpreter.get_output_details()]


def tflite_checks(model: bytes, vocabulary: list[str]) -> list[tuple[str, str, str]]:
    """(tokenizer, direction, result) for each tokenizer op and direction."""
    import numpy as np
    import tensorflow as tf
    import tensorflow_text as tf_text

    # Each with the row-split type it needs: the TFLite kernel of FastSentencepieceDetokenize
    # returns empty strings for int64 splits, FastWordpieceDetokenize takes int64 only.
    tokenizers = {
        "SentencepieceTokenizer": (
            tf_text.SentencepieceTokenizer(model, out_type=tf.int32), tf.int64),
        "FastSentencepieceTokenizer": (tf_text.FastSentencepieceTokenizer(model), tf.int32),
        "FastWordpieceTokenizer": (tf_text.FastWordpieceTokenizer(
            vocabulary, token_out_type=tf.int32, support_detokenization=True), tf.int64),
    }
    sentence = "Ein Mädchen läuft über die Straße."
    results = []
    for name, (tokenizer, splits_type) in tokenizers.items():
        ids = tf.cast(tokenizer.tokenize([sentence]).flat_values, tf.int32)

        # Ragged values and splits in and out: no ragged-to-dense op (not built-in).
        def encode(strings, tokenizer=tokenizer):
            tokens = tokenizer.tokenize(strings)
            return tf.cast(tokens.flat_values, tf.int32), tf.cast(tokens.row_splits, tf.int32)

        def decode(flat_ids, tokenizer=tokenizer, splits_type=splits_type):
            splits = tf.stack([0, tf.size(flat_ids, out_type=splits_type)])
            return tokenizer.detokenize(tf.RaggedTensor.from_row_splits(flat_ids, splits))

        for direction, function, spec, sample in (
            ("string → ids", encode, tf.TensorSpec([None], tf.string),
             np.array([sentence.encode()], dtype=object)),
            ("ids → string", decode, tf.TensorSpec([None], tf.int32), ids.numpy()),
        ):
            concrete = tf.function(function, input_signature=[spec]).get_concrete_function()
            expected = [np.asarray(t) for t in tf.nest.flatten(concrete(tf.constant(sample)))]
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tokenizer)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            try:
                with console.native_logging_silenced():
                    converter.convert()
                results.append((name, direction, "built-in ops: converts"))
                continue
            except Exception as error:  # the converter raises ConverterError and others
                missing = sorted(set(re.findall(r"'tf\.([\w>]+)' op is neither", str(error))))
                builtins = f"built-in ops: no ({', '.join(missing) or 'conversion error'})"
            converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], tokenizer)
            converter.allow_custom_ops = True
            try:
                with console.native_logging_silenced():
                    flatbuffer = converter.convert()
            except Exception:
                results.append((name, direction, f"{builtins}; as custom ops: does not convert"))
                continue
            try:
                # tf.lite's interpreter is deprecated, and logs XNNPACK's start.
                with warnings.catch_warnings(), console.native_logging_silenced():
                    warnings.simplefilter("ignore")
                    outputs = run_with_tensorflow_text_ops(flatbuffer, sample)
                same = all(any(np.array_equal(e, o) for o in outputs) for e in expected)
                ran = "runs, same output" if same else "runs, different output"
            except Exception as error:
                ran = f"does not run ({str(error).splitlines()[0][:80]})"
            results.append((name, direction, f"{builtins}; as custom ops: converts, {ran}"))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the Multi30k folder (train.en, val.de...)")
    parser.add_argument("--vocabulary-size", type=int, default=8000)
    args = parser.parse_args()
    console.quiet()

    import tensorflow as tf

    from kerasattn import text
    from zoo import training

    flags = sorted(flag for flag in training.cpu_flags()
                   if flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni"))
    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores, {' '.join(flags)}; "
          f"TensorFlow {tf.__version__}")
    train = read_split(os.path.join(args.data, "train"))
    val = read_split(os.path.join(args.data, "val"))
    print(f"{len(train.sources):,} training pairs, {len(val.sources):,} validation pairs; "
          f"vocabulary size {args.vocabulary_size:,}\n")

    size = args.vocabulary_size
    header = ("tokenizer", "learn s", "en tok/sent", "de tok/sent", "en exact %", "de exact %",
              "sentences/s")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    examples = []
    candidates = [
        *sentencepiece_candidates(train, size, "unigram", joint=True),
        *sentencepiece_candidates(train, size, "unigram", joint=False),
        *sentencepiece_candidates(train, size, "bpe", joint=True),
        *wordpiece_candidates(train, size, joint=True),
        *wordpiece_candidates(train, size, joint=False),
    ]
    for candidate in candidates:
        row = measure(candidate, train, val)
        print(f"| {row['name']} | {row['learn']:.1f} | {row['en tokens']:.2f} | "
              f"{row['de tokens']:.2f} | {row['en exact']:.1f} | {row['de exact']:.1f} | "
              f"{row['sentences/s']:,.0f} |", flush=True)
        for language in ("en", "de"):
            if row[f"{language} example"]:
                examples.append(f"{row['name']}, {language}: {row[f'{language} example']}")
    if examples:
        print("\nFirst inexact round trip:")
        print("\n".join(f"- {example}" for example in examples))

    print("\nTFLite (unigram joint model; WordPiece joint vocabulary):")
    model = text.learn_sentencepiece_model(train.sources + train.targets, size)
    vocabulary = text.learn_wordpiece_vocabulary(
        train.sources + train.targets, size, lower_case=False, normalization_form="NFKC")
    for name, direction, result in tflite_checks(model, vocabulary):
        print(f"- {name}, {direction}: {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
