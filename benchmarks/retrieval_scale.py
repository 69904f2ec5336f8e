"""Retrieval at catalogue scale: a nearest-neighbour index ÷ exact scoring (issue 26).

The recommender's `NextItemRetriever.recommend` scores every item (the user
state's inner product with each item embedding). `build_index` puts the item
embeddings in a FAISS index instead (`zoo.recommender.retrieval`). This
measures, for each index kind, against exact scoring of the same user states:

- **recall@10**: the share of the exact top 10 that the index returns;
- **build**: seconds, and the index's size (its serialized bytes, about what
  it holds in memory; exact scoring holds the table, and at batch 256 a
  `(256, N)` float32 score matrix besides);
- **latency**: milliseconds of one query (batch 1, median of `--repeats`
  single queries) and of a batch of 256 (median of 5), search only (the
  states given) — exact is a compiled `matmul` + `top_k` over the table, as
  `recommend` runs it.

On two catalogues:

1. **Video Games** (the shipped `video-games` preset, 23,715 items, width 50):
   every evaluated user's state after their whole history before the test
   item (30,901 users). Also `recommend(..., index=...)` against exact
   `recommend(...)` end to end, `exclude_seen` on (the state computed from
   the history, the seen items left out, the candidates re-scored): its
   recall@10 and latency at batch 1 and 256.
2. **A million items** (`--items`): the preset grown to 1,000,000 items, its
   23,715 followed by synthetic ones of the same width, drawn from a
   Gaussian with the mean and covariance of its item embeddings (seed 0; no
   cluster structure, so harder for an index than trained embeddings: over
   99 % of the users' exact top 10 are synthetic items), every other weight
   the preset's, queried by `--queries` Video Games users (their states are
   the preset's). Search only, and end to end as above.

    python benchmarks/retrieval_scale.py                 # a few minutes on 2 cores
    python benchmarks/retrieval_scale.py --synthetic-kinds ivf hnsw   # + HNSW on 1M (slow)

The default run builds every kind on Video Games but only IVF on the
synthetic catalogue: HNSW's build on a million items takes minutes more on
a small CPU (`--synthetic-kinds ivf hnsw` measures it). Each index is built
with its defaults and then searched at several settings (IVF's `nprobe`,
HNSW's `ef_search`; the build figures sit on the default's row). FAISS uses every
core (`--threads` to change), with `OMP_WAIT_POLICY=PASSIVE` unless the
environment sets it. It prints the CPU (model, cores, SIMD flags), the load
average, the library versions, and markdown tables.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import time

import numpy as np

# FAISS's OpenMP threads spin at each barrier by default: on a CPU that other work also
# loads, that made one exact FAISS query 40 times slower here (0.46 ms against 19 ms).
# Set OMP_WAIT_POLICY=ACTIVE to time the default on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
K = 10


def add_data_argument(parser: argparse.ArgumentParser) -> None:
    """`--data`: Video Games in SASRec's format, by default from ../shared/data."""
    parser.add_argument("--data", default=os.path.normpath(
        os.path.join(ROOT, "..", "shared", "data", "sasrec", "Video.txt")),
        help="Video Games, SASRec format (default: ../shared/data/sasrec/Video.txt)")


def cpu_description() -> str:
    from zoo.training import cpu_flags
    from zoo.training import cpu_name

    present = [flag for flag in FLAGS if flag in cpu_flags()]
    return f"{cpu_name()}, {os.cpu_count()} cores; {', '.join(present) or 'no AVX2/AVX-512/AMX'}"


def recall(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.mean([len(set(a.tolist()) & set(b.tolist())) / len(b)
                          for a, b in zip(found, expected)]))


def median_ms(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


class ExactSearch:
    """Exact top-k inner product over a table (row 0 never returned), as `recommend`:
    one compiled `matmul` + `top_k`, in batches."""

    def __init__(self, table: np.ndarray):
        import tensorflow as tf

        self.table = tf.constant(table)
        padding = tf.constant(np.arange(len(table)) == 0)

        @tf.function(reduce_retracing=True)
        def top(states, k):
            scores = tf.matmul(states, self.table, transpose_b=True)
            scores = tf.where(padding[None], -np.inf, scores)
            values, ids = tf.math.top_k(scores, k)
            return ids, values

        self._top = top

    def search(self, states: np.ndarray, k: int, batch: int = 256):
        import tensorflow as tf

        ids, values = [], []
        for start in range(0, len(states), batch):
            found = self._top(tf.constant(states[start:start + batch]), tf.constant(k))
            ids.append(found[0].numpy())
            values.append(found[1].numpy())
        return np.concatenate(ids), np.concatenate(values)


# Search settings swept on each built index (the middle one of each is the default).
SWEEP = {"ivf": ("nprobe", (16, 32, 64, 128)), "hnsw": ("ef_search", (32, 64, 128, 256)),
         "flat": (None, ())}


def measure_kind(kind: str, table: np.ndarray, states: np.ndarray, expected: np.ndarray,
                 repeats: int):
    """Builds a `kind` index with its defaults; one row per search setting of `SWEEP`
    (build figures on the default's row). Returns the index (at its defaults) and rows."""
    from zoo.recommender.retrieval import RetrievalIndex

    start = time.perf_counter()
    index = RetrievalIndex.build(table, kind)
    build = time.perf_counter() - start
    size = index.nbytes / 2**20
    name, values = SWEEP[kind]
    default = index.options.get(name)
    rows = []
    for value in values or (None,):
        if name is not None:
            index.set_search_options(**{name: value})
        found, _ = index.search(states, K)
        one = states[:1]
        index.search(one, K)  # warm-up
        is_default = value == default
        rows.append({"kind": kind,
                     "options": ({name: value} if not is_default else index.options),
                     "recall": recall(found, expected),
                     "build_s": build if is_default else float("nan"),
                     "size_mb": size if is_default else float("nan"),
                     "b1_ms": median_ms(lambda: index.search(one, K), repeats),
                     "b256_ms": median_ms(lambda: index.search(states[:256], K), 5)})
    if name is not None:
        index.set_search_options(**{name: default})
    return index, rows


def exact_row(table: np.ndarray, states: np.ndarray, repeats: int):
    exact = ExactSearch(table)
    ids, _ = exact.search(states, K)
    exact.search(states[:1], K)
    exact.search(states[:256], K)  # traced for both shapes before timing
    return exact, ids, {
        "kind": "exact (matmul + top_k)", "options": {}, "recall": 1.0, "items": len(table),
        "build_s": float("nan"), "size_mb": table.nbytes / 2**20,
        "b1_ms": median_ms(lambda: exact.search(states[:1], K), repeats),
        "b256_ms": median_ms(lambda: exact.search(states[:256], K), 5)}


def table_lines(rows: list) -> list:
    lines = ["| index | options | recall@10 | build s | size MB | batch 1 ms | batch 256 ms | "
             "batch 256 ÷ exact |",
             "|---|---|---|---|---|---|---|---|"]
    exact = rows[0]["b256_ms"]

    def shown(value, digits):
        return "" if np.isnan(value) else f"{value:.{digits}f}"

    for row in rows:
        options = ", ".join(f"{key}={value}" for key, value in row["options"].items()) or "—"
        lines.append(f"| {row['kind']} | {options} | {row['recall']:.4f} | "
                     f"{shown(row['build_s'], 1)} | {shown(row['size_mb'], 1)} | "
                     f"{row['b1_ms']:.3f} | "
                     f"{row['b256_ms']:.2f} | {row['b256_ms'] / exact:.3f} |")
    lines.append(f"\n(exact scoring of a batch of 256 also holds a (256, N) score matrix: "
                 f"{256 * rows[0]['items'] * 4 / 2**20:.0f} MB)")
    return lines


def end_to_end(model, padded: np.ndarray, served: dict, repeats: int,
               batch_size: int = 512) -> list:
    """Exact `recommend` ÷ `recommend(index=...)` on the same histories, exclude_seen on:
    recall@10 of each index against exact, and latency at batch 1 and 256."""

    def all_rows(**kwargs):
        return np.concatenate([model.recommend(padded[start:start + batch_size], K, **kwargs)[0]
                               for start in range(0, len(padded), batch_size)])

    exact_ids = all_rows()
    one, batch = padded[:1], padded[:256]
    model.recommend(one, K)
    model.recommend(batch, K)
    rows = [{"kind": "exact `recommend`", "recall": 1.0,
             "b1_ms": median_ms(lambda: model.recommend(one, K), repeats),
             "b256_ms": median_ms(lambda: model.recommend(batch, K), 5)}]
    for kind, index in served.items():
        ids = all_rows(index=index)
        rows.append({
            "kind": f"`recommend(index=<{kind}>)`", "recall": recall(ids, exact_ids),
            "b1_ms": median_ms(lambda: model.recommend(one, K, index=index), repeats),
            "b256_ms": median_ms(lambda: model.recommend(batch, K, index=index), 5)})
    return rows


def end_to_end_lines(rows: list) -> list:
    lines = ["| path | recall@10 vs exact | batch 1 ms | batch 256 ms | batch 256 ÷ exact |",
             "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['kind']} | {row['recall']:.4f} | {row['b1_ms']:.2f} | "
                     f"{row['b256_ms']:.1f} | {row['b256_ms'] / rows[0]['b256_ms']:.3f} |")
    return lines


def video_games(args, model, read) -> tuple[list, list]:
    """Every evaluated user of Video Games on the preset: search-only rows and end-to-end rows."""
    from kerasattn import data as kdata

    histories = read.split.test_history
    padded = kdata.pad_histories(histories, max(len(history) for history in histories))
    states = np.concatenate([model.user_states(padded[start:start + 1024])
                             for start in range(0, len(padded), 1024)])
    table = np.asarray(model.item_embeddings, dtype=np.float32)
    exact, expected, first = exact_row(table, states, args.repeats)
    print(f"Video Games: {len(states):,} users, {model.num_items:,} items, width "
          f"{table.shape[1]}; exact top-10 of {len(states):,} users in "
          f"{exact_seconds(exact, states):.1f} s\n", flush=True)
    rows, served = [first], {}
    for kind in args.kinds:
        served[kind], measured = measure_kind(kind, table, states, expected, args.repeats)
        rows += measured
    return rows, end_to_end(model, padded, served, args.repeats)


def exact_seconds(exact: ExactSearch, states: np.ndarray) -> float:
    start = time.perf_counter()
    exact.search(states, K)
    return time.perf_counter() - start


def large_model(model, items: int):
    """The preset with `items` items: its own, then synthetic ones (a Gaussian with the
    mean and covariance of its item embeddings, seed 0); the same weights otherwise, so
    its users' states are the preset's."""
    from zoo.recommender.model import NextItemRetriever
    from zoo.recommender.model import SequentialRecommenderBackbone

    real = np.asarray(model.item_embeddings, dtype=np.float64)
    rng = np.random.default_rng(0)
    synthetic = rng.multivariate_normal(real[1:].mean(axis=0), np.cov(real[1:].T),
                                        size=items - model.num_items, method="cholesky")
    backbone = SequentialRecommenderBackbone.from_config(
        {**model.backbone.get_config(), "num_items": items})
    for source, target in zip(model.backbone.layers, backbone.layers):
        if source.name == "item_embedding":
            target.set_weights([np.vstack([real, synthetic]).astype(np.float32)])
        elif source.weights:
            target.set_weights(source.get_weights())
    return NextItemRetriever(backbone)


def synthetic(args, model, read) -> tuple[list, list, float]:
    """`--queries` Video Games users on the preset grown to `--items` items: search-only
    rows, end-to-end rows, and the share of synthetic items in the exact top 10."""
    from kerasattn import data as kdata

    big = large_model(model, args.items)
    histories = read.split.test_history
    chosen = np.random.default_rng(0).choice(len(histories), args.queries, replace=False)
    users = [histories[i] for i in chosen]
    padded = kdata.pad_histories(users, max(len(history) for history in users))
    states = big.user_states(padded)
    if not np.allclose(states, model.user_states(padded), atol=1e-4):
        raise AssertionError("the large model's user states differ from the preset's")
    table = np.asarray(big.item_embeddings, dtype=np.float32)
    _, expected, first = exact_row(table, states, args.repeats)
    rows, served = [first], {}
    for kind in args.synthetic_kinds:
        served[kind], measured = measure_kind(kind, table, states, expected, args.repeats)
        rows += measured
    del table
    share = float(np.mean(expected > model.num_items))
    return rows, end_to_end(big, padded, served, args.repeats, batch_size=128), share


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--preset", default="video-games", help="(default: %(default)s)")
    parser.add_argument("--kinds", nargs="+", choices=("ivf", "hnsw", "flat"),
                        default=["ivf", "hnsw", "flat"],
                        help="index kinds on Video Games (default: all)")
    parser.add_argument("--synthetic-kinds", nargs="*", choices=("ivf", "hnsw", "flat"),
                        default=["ivf"],
                        help="index kinds on the synthetic catalogue (default: ivf; none: "
                             "skip it)")
    parser.add_argument("--items", type=int, default=1_000_000,
                        help="synthetic catalogue size (default: %(default)s)")
    parser.add_argument("--queries", type=int, default=1000,
                        help="Video Games user states that query the synthetic catalogue "
                             "(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=100,
                        help="single queries timed for batch 1 (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="FAISS's threads (default: every core)")
    args = parser.parse_args(argv)
    for flag in ("items", "queries", "repeats"):
        if getattr(args, flag) <= 0:
            parser.error(f"expected --{flag} > 0, received: {getattr(args, flag)}")
    if not os.path.isfile(args.data):
        parser.error(f"{args.data}: expected the Video Games file, received: no such file")

    from zoo import console

    console.quiet()
    import faiss
    import keras
    import tensorflow as tf

    from zoo.recommender import data as recommender_data
    from zoo.recommender.model import NextItemRetriever

    if args.threads is not None:
        faiss.omp_set_num_threads(args.threads)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
          f"{cpu_description()}; load average {os.getloadavg()[0]:.1f}")
    print(f"Python {platform.python_version()}, faiss-cpu {faiss.__version__} "
          f"({faiss.omp_get_max_threads()} threads, OMP_WAIT_POLICY="
          f"{os.environ['OMP_WAIT_POLICY']}), tensorflow {tf.__version__}, "
          f"keras {keras.__version__}, numpy {np.__version__}\n", flush=True)
    model = NextItemRetriever.from_preset(args.preset)
    if args.synthetic_kinds and args.items <= model.num_items:
        parser.error(f"expected --items > the preset's {model.num_items} items, received: "
                     f"{args.items}")
    read = recommender_data.read(args.data, item_labels=model.preprocessor.item_labels)
    start = time.perf_counter()
    rows, served = video_games(args, model, read)
    print("\n".join(table_lines(rows)))
    print("\nEnd to end (`recommend`, exclude_seen on, the state computed from the history):\n")
    print("\n".join(end_to_end_lines(served)))
    print(f"\n({time.perf_counter() - start:.0f} s)\n", flush=True)
    if args.synthetic_kinds:
        start = time.perf_counter()
        rows, served, share = synthetic(args, model, read)
        print(f"Synthetic: the preset's {model.num_items:,} items and "
              f"{args.items - model.num_items:,} synthetic ones ({args.items:,}), width "
              f"{model.backbone.hidden_dim}; {args.queries:,} "
              f"Video Games users; {share:.1%} of their exact top 10 are synthetic items\n")
        print("\n".join(table_lines(rows)))
        print("\nEnd to end (`recommend` on the grown model, exclude_seen on):\n")
        print("\n".join(end_to_end_lines(served)))
        print(f"\n({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
