"""Training step time by catalogue size: full softmax ÷ sampled softmax (issue 26).

The recipe's default loss, the full softmax, scores every item at every real
position of a batch: its step grows with the catalogue `N` (and its logits
take `positions × N × 4` bytes, twice with their gradient), where the
sampled softmax scores 256 shared negatives whatever `N`. This times one
training step of the `video-games` recipe's model (2 blocks × 50, length 50,
batches of 128 users, AdamW) on Video Games' own training batches (random
batches, as `--no-sort-by-length`; the same batches for every contender),
with catalogues of `--sizes` items: the 23,715 real ones and, beyond them,
items no history holds (only their logits and embeddings cost), for

- `full_softmax` (the recipe's default);
- `sampled_softmax` with 256 negatives drawn by popularity with the logQ
  correction (`--negative-sampling popularity`; uniform costs the same).

It prints the median step time over `--steps` steps after `--warmup`, and
the logits' size, per loss and size.

    python benchmarks/softmax_scale.py --data ../shared/data/sasrec/Video.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from retrieval_scale import add_data_argument  # noqa: E402
from retrieval_scale import cpu_description  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--sizes", type=int, nargs="+", default=[23715, 100_000, 300_000],
                        help="catalogue sizes (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (default: 3)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.data):
        parser.error(f"{args.data}: expected the Video Games file, received: no such file")

    from zoo import console

    console.quiet()
    import keras
    import tensorflow as tf

    from zoo import training
    from zoo.recommender import data as recommender_data
    from zoo.recommender.model import NextItemRetriever
    from zoo.recommender.model import SequentialRecommenderBackbone

    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {cpu_description()}; "
          f"load average {os.getloadavg()[0]:.1f}; tensorflow {tf.__version__}, keras "
          f"{keras.__version__}\n", flush=True)
    read = recommender_data.read(args.data)
    if min(args.sizes) < read.num_items:
        parser.error(f"expected --sizes >= the data's {read.num_items} items, received: "
                     f"{min(args.sizes)}")
    dataset, _ = recommender_data.retrieval_batches(read, 50, 128, seed=1)
    batches = list(dataset.take(args.warmup + args.steps).as_numpy_iterator())
    positions = np.mean([np.count_nonzero(positives) for _, positives in batches])
    print("| items | loss | ms / step | logits MB (real positions × items) |\n|---|---|---|---|")
    for size in args.sizes:
        counts = np.zeros(size + 1, np.int64)
        counts[:read.num_items + 1] = read.item_counts()
        for loss in ("full_softmax", "sampled_softmax"):
            keras.utils.set_random_seed(1)
            backbone = SequentialRecommenderBackbone(size, max_sequence_length=50,
                                                     hidden_dim=50, num_layers=2, num_heads=1,
                                                     dropout=0.5)
            extra = {"item_counts": counts.tolist()} if loss == "sampled_softmax" else {}
            model = NextItemRetriever(backbone, loss=loss, num_negatives=256, seed=1, **extra)
            model.compile(optimizer=training.optimizer(1e-3, total_steps=1000, warmup_steps=100,
                                                       weight_decay=0.0))
            times = []
            for index, (inputs, positives) in enumerate(batches):
                start = time.perf_counter()
                model.train_on_batch(inputs, positives)
                if index >= args.warmup:
                    times.append((time.perf_counter() - start) * 1e3)
            width = size if loss == "full_softmax" else 256 + 1
            print(f"| {size:,} | {loss} | {np.median(times):.0f} | "
                  f"{positions * width * 4 / 2**20:.0f} |", flush=True)
            del model, backbone
            keras.backend.clear_session()
    return 0


if __name__ == "__main__":
    sys.exit(main())
