"""Translator decoding speed, as ratios measured in one process.

1. Cached greedy decoding ÷ re-running the whole model per token (the
   keras.io translation example's loop), target tokens per second, batch 1,
   on the first `--sentences` validation sources: the anchor eager as
   keras.io runs it, and compiled (one `tf.function` per padded length, as
   fast as that loop gets). All must produce the same tokens; the share
   that does is printed.
2. The exported beam-4 translation of the whole validation set (the
   SavedModel's `translate` signature: strings in, strings out) ÷
   CTranslate2 float32 running the same weights (converted with its
   Python `specs` API), sentences sorted by length and cut into batches of
   `--batch-size` for both, `--threads` threads each. BLEU of both is
   printed: equal scores say the conversion is faithful (CTranslate2's
   length penalty is `length ** alpha`, not GNMT's, so a few beams differ).

CTranslate2 is needed for part 2 only (`pip install ctranslate2==4.8.5`); it
is not a dependency of the project.

    python benchmarks/translator_speed.py --data ../shared/data/multi30k
    python benchmarks/translator_speed.py --model OUT/model.keras --export EXPORTED/
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)

END_OF_SENTENCE = 3  # kerasattn.text.END_ID


def _tokens_until_end(row) -> list[int]:
    """The ids after `[START]` up to and including the first `[END]`."""
    tokens = []
    for token in row[1:]:
        tokens.append(int(token))
        if token == END_OF_SENTENCE:
            break
    return tokens


def uncached_greedy(model, compiled: bool):
    """Greedy search that re-runs encoder and decoder on the padded target for each token.

    keras.io's example calls the model eagerly (`compiled=False`); compiled,
    the forward pass is one `tf.function` per padded length.
    """
    import numpy as np
    import tensorflow as tf

    def forward(source_ids, source_mask, target_ids, target_mask):
        return model({"encoder_token_ids": source_ids, "encoder_padding_mask": source_mask,
                      "decoder_token_ids": target_ids, "decoder_padding_mask": target_mask},
                     training=False)

    if compiled:
        forward = tf.function(forward, reduce_retracing=True)

    def generate(source_ids, max_length: int) -> list[int]:
        source_mask = source_ids != 0
        target = np.zeros((1, max_length), "int32")
        target[0, 0] = 2  # kerasattn.text.START_ID
        for position in range(max_length - 1):
            logits = forward(source_ids, source_mask, target, target != 0)
            target[0, position + 1] = int(np.argmax(logits[0, position]))
            if target[0, position + 1] == END_OF_SENTENCE:
                break
        return _tokens_until_end(target[0])

    return generate


def cached_versus_uncached(model, sources: list[str]) -> dict:
    import numpy as np

    features = [model.preprocessor([source]) for source in sources]
    inputs = [(np.asarray(f["encoder_token_ids"]), model.default_max_length(
        int(np.asarray(f["encoder_padding_mask"]).sum()))) for f in features]
    def cached(source_ids, max_length):
        return _tokens_until_end(np.asarray(model.generate(source_ids, beam=1,
                                                           max_length=max_length))[0])

    results = {}
    for name, decode in (("cached", cached),
                         ("uncached_compiled", uncached_greedy(model, compiled=True)),
                         ("uncached_eager", uncached_greedy(model, compiled=False))):
        decode(*inputs[0])  # trace once before timing
        for source_ids, max_length in inputs:  # and every padded length
            if max_length != inputs[0][1]:
                decode(source_ids, max_length)
        start = time.perf_counter()
        outputs = [decode(source_ids, max_length) for source_ids, max_length in inputs]
        seconds = time.perf_counter() - start
        results[name] = {"outputs": outputs, "seconds": seconds,
                         "tokens": sum(len(tokens) for tokens in outputs)}
    same = min(np.mean([a == b for a, b in zip(results["cached"]["outputs"], result["outputs"])])
               for result in results.values())
    rates = {name: result["tokens"] / result["seconds"] for name, result in results.items()}
    return {"tokens_per_second": rates, "identical_fraction": float(same)}


def ctranslate2_model(model, folder: str) -> None:
    """Writes `model`'s weights as a CTranslate2 float32 Transformer (its `specs` API)."""
    import ctranslate2
    import numpy as np
    import sentencepiece
    from ctranslate2.specs import common_spec
    from ctranslate2.specs import transformer_spec

    backbone = model.backbone
    if backbone.additive_cross_attention or not backbone.share_embeddings:
        raise SystemExit("CTranslate2's Transformer needs multi-head cross-attention and one "
                         "shared vocabulary")
    spec = transformer_spec.TransformerSpec.from_config(
        (backbone.num_encoder_layers, backbone.num_decoder_layers), backbone.num_heads,
        pre_norm=True, activation=common_spec.Activation.RELU)

    def numpy(variable):
        return np.asarray(variable.numpy(), "float32")

    def norm(spec_norm, layer):
        spec_norm.gamma, spec_norm.beta = numpy(layer.gamma), numpy(layer.beta)

    def linear(spec_linear, *dense_layers):
        """Keras kernels `(d, ..., out)` as one CTranslate2 `(out, d)` weight, fused in order."""
        spec_linear.weight = np.concatenate(
            [numpy(layer.kernel).reshape(layer.kernel.shape[0], -1).T for layer in dense_layers])
        spec_linear.bias = np.concatenate([numpy(layer.bias).reshape(-1) for layer in dense_layers])

    def output(spec_linear, attention):
        kernel = attention.output_dense.kernel
        spec_linear.weight = numpy(kernel).reshape(-1, kernel.shape[-1]).T
        spec_linear.bias = numpy(attention.output_dense.bias)

    def feedforward(spec_ffn, block):
        norm(spec_ffn.layer_norm, block._feedforward_layer_norm)
        linear(spec_ffn.linear_0, block._feedforward_intermediate_dense)
        linear(spec_ffn.linear_1, block._feedforward_output_dense)

    embedding = numpy(backbone.target_token_embedding.embeddings)
    positions = np.asarray(backbone._embedding_layers["encoder"][1](
        np.zeros((1, model.preprocessor.target_sequence_length + 1, backbone.hidden_dim),
                 "float32")))[0]
    for side in (spec.encoder, spec.decoder):
        (side.embeddings[0] if isinstance(side.embeddings, list) else side.embeddings).weight = (
            embedding)
        side.scale_embeddings = True
        side.position_encodings.encodings = positions
    norm(spec.encoder.layer_norm, backbone._encoder_norm)
    norm(spec.decoder.layer_norm, backbone._decoder_norm)
    for spec_layer, block in zip(spec.encoder.layer, backbone._encoder_blocks):
        attention = block._self_attention
        norm(spec_layer.self_attention.layer_norm, block._self_attention_layer_norm)
        linear(spec_layer.self_attention.linear[0], attention.query_dense, attention.key_dense,
               attention.value_dense)
        output(spec_layer.self_attention.linear[1], attention)
        feedforward(spec_layer.ffn, block)
    for spec_layer, block in zip(spec.decoder.layer, backbone._decoder_blocks):
        attention, cross = block._self_attention, block._cross_attention
        norm(spec_layer.self_attention.layer_norm, block._self_attention_layer_norm)
        linear(spec_layer.self_attention.linear[0], attention.query_dense, attention.key_dense,
               attention.value_dense)
        output(spec_layer.self_attention.linear[1], attention)
        norm(spec_layer.attention.layer_norm, block._cross_attention_layer_norm)
        linear(spec_layer.attention.linear[0], cross.query_dense)
        linear(spec_layer.attention.linear[1], cross.key_dense, cross.value_dense)
        output(spec_layer.attention.linear[2], cross)
        feedforward(spec_layer.ffn, block)
    spec.decoder.projection.weight = embedding
    spec.decoder.projection.bias = np.zeros((embedding.shape[0],), "float32")

    processor = sentencepiece.SentencePieceProcessor(
        model_proto=model.preprocessor.source_tokenizer.model)
    pieces = [processor.id_to_piece(index) for index in range(processor.get_piece_size())]
    spec.register_source_vocabulary(pieces)
    spec.register_target_vocabulary(pieces)
    spec.config.add_source_bos = spec.config.add_source_eos = False
    spec.config.bos_token = spec.config.decoder_start_token = pieces[2]
    spec.config.eos_token, spec.config.unk_token = pieces[3], pieces[1]

    class FromSpec(ctranslate2.converters.Converter):
        def _load(self):
            return spec

    FromSpec().convert(folder, force=True)


def timed(functions: dict, repeats: int) -> dict:
    """Median seconds of each function after a warm-up call, the functions
    alternated `repeats` times (so that a change of load hits them alike)."""
    for function in functions.values():
        function()
    times = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def exported_versus_ctranslate2(model, export_dir: str, validation, threads: int,
                                batch_size: int, beam: int, repeats: int) -> dict:
    import ctranslate2
    import sentencepiece
    import tensorflow as tf

    import sacrebleu

    def bleu(hypotheses, references):
        return sacrebleu.corpus_bleu(hypotheses, [references]).score

    processor = sentencepiece.SentencePieceProcessor(
        model_proto=model.preprocessor.source_tokenizer.model)
    order = sorted(range(len(validation.sources)),
                   key=lambda index: len(processor.encode(validation.sources[index])))
    sources = [validation.sources[index] for index in order]
    references = [validation.targets[index] for index in order]
    batches = [sources[start:start + batch_size] for start in range(0, len(sources), batch_size)]

    translate = tf.saved_model.load(export_dir).signatures["translate"]
    ours: list[str] = []

    def run_ours():
        ours.clear()
        for batch in batches:
            result = translate(texts=tf.constant(batch))["translations"]
            ours.extend(text.decode("utf-8") for text in result.numpy())

    max_length = model.preprocessor.target_sequence_length
    with tempfile.TemporaryDirectory() as folder:
        ctranslate2_model(model, folder)
        translator = ctranslate2.Translator(folder, device="cpu", compute_type="float32",
                                            inter_threads=1, intra_threads=threads)
        theirs: list[str] = []

        def run_theirs():
            theirs.clear()
            for batch in batches:
                results = translator.translate_batch(
                    [processor.encode(text, out_type=str) for text in batch], beam_size=beam,
                    length_penalty=0.6, max_decoding_length=max_length, max_batch_size=batch_size)
                theirs.extend(processor.decode_pieces(result.hypotheses[0]) for result in results)

        seconds = timed({"ctranslate2": run_theirs, "ours": run_ours}, repeats)
    return {"seconds": seconds, "ratio": seconds["ours"] / seconds["ctranslate2"],
            "bleu": {"ours": bleu(ours, references), "ctranslate2": bleu(theirs, references)},
            "sentences": len(sources)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=os.path.join(REPO, "..", "shared", "data", "multi30k"),
                        help="the folder with val.en / val.de (default: ../shared/data/multi30k)")
    parser.add_argument("--preset", default="multi30k-en-de")
    parser.add_argument("--model", help="a .keras translator instead of the preset")
    parser.add_argument("--export", help="a folder `python -m zoo export` wrote for this model "
                        "(default: export to a temporary folder first)")
    parser.add_argument("--sentences", type=int, default=100,
                        help="validation sentences of the cached-versus-uncached part")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--beam", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-ctranslate2", action="store_true")
    args = parser.parse_args()
    console.quiet()
    import tensorflow as tf

    from kerasattn.data import read_parallel_text
    from zoo.registry import recipes
    from zoo.training import cpu_name

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    model = recipes()["translator"].load(None if args.model else args.preset, args.model)
    validation = read_parallel_text(os.path.join(args.data, "val.en"),
                                    os.path.join(args.data, "val.de"))
    print(f"CPU: {cpu_name()}; {args.threads} threads")

    speed = cached_versus_uncached(model, validation.sources[:args.sentences])
    rates = speed["tokens_per_second"]
    print(f"greedy, batch 1, {args.sentences} sentences, target tokens/s: cached "
          f"{rates['cached']:.1f}; re-running the model per token, compiled "
          f"{rates['uncached_compiled']:.1f} ({rates['cached'] / rates['uncached_compiled']:.1f}x),"
          f" eager as keras.io {rates['uncached_eager']:.1f} "
          f"({rates['cached'] / rates['uncached_eager']:.1f}x); same tokens: "
          f"{speed['identical_fraction']:.0%}")
    if args.skip_ctranslate2:
        return 0
    with tempfile.TemporaryDirectory() as temporary:
        export_dir = args.export
        if export_dir is None:
            from zoo.translator.export import export_translator

            export_dir = os.path.join(temporary, "exported")
            with console.native_logging_silenced():  # LiteRT's parity checks log natively
                export_translator(model, export_dir, beam=args.beam)
        result = exported_versus_ctranslate2(model, os.path.join(export_dir, "saved_model"),
                                             validation, args.threads, args.batch_size,
                                             args.beam, args.repeats)
    print(f"beam {args.beam}, {result['sentences']} sentences in batches of {args.batch_size}: "
          f"exported SavedModel {result['seconds']['ours']:.1f} s (BLEU "
          f"{result['bleu']['ours']:.2f}), CTranslate2 float32 "
          f"{result['seconds']['ctranslate2']:.1f} s (BLEU {result['bleu']['ctranslate2']:.2f}): "
          f"ours / CTranslate2 = {result['ratio']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
