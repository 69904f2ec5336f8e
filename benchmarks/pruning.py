"""A pruned sst2 classifier against the unpruned preset, timed in the same run.

Both models are exported with `kerasattn.export` (float32 LiteRT and ONNX, each file
checked against Keras) and timed on `benchmarks/tflite_latency.py`'s input (the longest
SST-2 dev sentence, 64 tokens, batch 1): LiteRT on one thread with XNNPACK and ONNX
Runtime on one intra-op thread, the files interleaved over `--rounds` rounds (median of
`--runs` calls each). Printed: each file's latency, ops and MFLOP per example, the
pruned ÷ unpruned ratios, and both models' dev accuracy (Keras).

    python benchmarks/pruning.py --pruned zoo_runs/sst2-pruned/preset --data ../shared/data

`--pruned` is the preset folder `python -m zoo prune attention-transformer` wrote.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pruned", required=True, help="the pruned classifier's preset folder")
    parser.add_argument("--data", default=os.path.normpath(os.path.join(REPO, "..", "shared",
                                                                       "data")),
                        help="the folder with sst2/ (default: ../shared/data)")
    parser.add_argument("--runs", type=int, default=300, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    args = parser.parse_args()
    for name in ("runs", "rounds"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0")
    if not os.path.isdir(args.pruned):
        parser.error(f"--pruned {args.pruned}: no such folder")
    console.quiet()
    import numpy as np

    from kerasattn import prune
    from kerasattn.export import OnnxRuntime
    from kerasattn.export import export
    from tflite_latency import Timed
    from tflite_latency import interleaved
    from zoo import training
    from zoo.attention_transformer import AttentionTransformerClassifier
    from zoo.attention_transformer.data import read_labelled
    from zoo.attention_transformer.data import score
    from zoo.pruning import encoder_parameters

    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores; "
          f"load average {os.getloadavg()[0]:.1f}")
    models = {"unpruned": AttentionTransformerClassifier.from_preset("sst2"),
              "pruned": AttentionTransformerClassifier.from_preset(args.pruned)}
    preprocessor = models["unpruned"].preprocessor
    dev = read_labelled(os.path.join(args.data, "sst2", "dev.tsv"),
                        models["unpruned"].label_names)
    features = {key: np.asarray(value) for key, value in preprocessor(dev.texts).items()}
    longest = int(np.argmax(features["padding_mask"].sum(1)))
    example = {key: value[longest:longest + 1] for key, value in features.items()}
    litert, onnx = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in models.items():
            out = os.path.join(folder, name)
            with console.native_logging_silenced():
                export(model, out, formats=("tflite", "onnx"), quantize=("float32",),
                       sample_inputs=dev.texts[:8], preprocessor=preprocessor, latency_runs=1)
            litert[name] = Timed(name, os.path.join(out, "model_float32.tflite"), example)
            onnx[name] = OnnxRuntime(os.path.join(out, "model.onnx"))
        onnx_ms: dict[str, list] = {name: [] for name in onnx}
        with console.native_logging_silenced():
            interleaved(list(litert.values()), args.rounds, args.runs)
            for _ in range(args.rounds):
                for name, runtime in onnx.items():
                    onnx_ms[name].append(runtime.latency_ms(example, args.runs))
    onnx_median = {name: statistics.median(values) for name, values in onnx_ms.items()}
    print(f"\n### `sst2` pruned ({args.pruned}) against the preset, {example['token_ids'].shape[1]}"
          " tokens, batch 1\n")
    print("| model | heads | feed-forward units | parameters | encoder parameters | "
          "dev accuracy | LiteRT ops | MFLOP / example | LiteRT ms | ONNX Runtime ms |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, model in models.items():
        sizes = prune.counts(model)
        print(f"| {name} | {sizes['heads']} | {sizes['units']} | {model.count_params():,} | "
              f"{encoder_parameters(model):,} | {score(model, dev)['accuracy']:.4f} | "
              f"{litert[name].ops} | {litert[name].flops / 1e6:.2f} | {litert[name].ms:.3f} | "
              f"{onnx_median[name]:.3f} |")
    print(f"\nunpruned ÷ pruned: LiteRT {litert['unpruned'].ms / litert['pruned'].ms:.2f}×, "
          f"ONNX Runtime {onnx_median['unpruned'] / onnx_median['pruned']:.2f}×, "
          f"MFLOP {litert['unpruned'].flops / litert['pruned'].flops:.2f}×, encoder parameters "
          f"{encoder_parameters(models['unpruned']) / encoder_parameters(models['pruned']):.2f}×")
    return 0


if __name__ == "__main__":
    sys.exit(main())
