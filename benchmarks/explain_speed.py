"""Milliseconds to explain one sentence with the sst2 preset, per method.

Each of the first `--sentences` texts of SST-2's dev.tsv is explained alone
(batch 1, as `zoo explain` does) by every `kerasattn.explain` method; the
median wall time and the median CPU time of this process are printed per
method (CPU time is less disturbed by other jobs on a shared machine).

    python benchmarks/explain_speed.py --data ../shared/data/sst2/dev.tsv
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

from zoo import console


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="SST-2's dev.tsv")
    parser.add_argument("--sentences", type=int, default=50, help="sentences timed per method")
    args = parser.parse_args()
    console.quiet()
    from kerasattn import explain
    from zoo.attention_transformer import data as recipe_data
    from zoo.attention_transformer.explanations import features
    from zoo.attention_transformer.model import AttentionTransformerClassifier

    model = AttentionTransformerClassifier.from_preset("sst2")
    rows = recipe_data.read_labelled(args.data, model.label_names)
    texts = rows.texts[:args.sentences]
    encoded = [features(model, [text]) for text in texts]
    mask_id = model.preprocessor.vocabulary.index("[MASK]")
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                if line.startswith("model name")), platform.processor())
    lengths = [int(e["padding_mask"].sum()) for e in encoded]
    print(f"{cpu}; {len(texts)} sentences of {statistics.mean(lengths):.1f} tokens on average")
    print(f"{'method':<22} {'median wall ms':>15} {'median CPU ms':>14}")
    for method in explain.METHODS:
        explain.explain(model, encoded[0], method, baseline=mask_id)  # warm-up
        wall, processor = [], []
        for batch in encoded:
            started, started_cpu = time.perf_counter(), time.process_time()
            explain.explain(model, batch, method, baseline=mask_id)
            wall.append(1000 * (time.perf_counter() - started))
            processor.append(1000 * (time.process_time() - started_cpu))
        print(f"{method:<22} {statistics.median(wall):15.1f} {statistics.median(processor):14.1f}")


if __name__ == "__main__":
    main()
