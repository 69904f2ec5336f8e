"""Which nearest-neighbour library serves the recommender: FAISS, hnswlib, ScaNN (issue 26).

Each library indexes the same item embeddings for top-10 inner product (the
recommender's score), and is queried with the same user states; recall@10 is
against exact scoring, latency is the median of `--repeats` single queries
(batch 1) and of 5 batches of 256. Each index is built once and searched at
several settings (the last column names the knob). Contenders:

- FAISS (`faiss-cpu`): IVF and HNSW, each on raw inner product and on the
  inner-product-to-L2 reduction that `zoo.recommender.retrieval` uses (one
  more coordinate `sqrt(M² - |x|²)` per item, 0 per query);
- hnswlib (`space="ip"`, inner product): it has no wheel for Python 3.11 on
  PyPI (0.8.0 is a source distribution; pip builds it with a C++ compiler);
- ScaNN (`scann`, a tree of `2·sqrt(N)` leaves, anisotropic hashing, the best
  100 re-scored exactly): its wheel installs, but `import scann` fails next
  to TensorFlow 2.21 (the package loads a TensorFlow op built for 2.20:
  "undefined symbol ... absl"); this script measures it by standing in an
  empty module for that op (`--allow-scann-stub`), which no library code of
  ours should do.

Libraries that are not installed are skipped with the reason. Catalogues:
the `video-games` preset's items (23,715), queried with `--queries` of its
users' states (after each evaluated user's history before the test item);
or `--items N` synthetic items of the same width (a Gaussian with the
preset's item mean and covariance, seed 0).

    python benchmarks/retrieval_libraries.py --data ../shared/data/sasrec/Video.txt
    python benchmarks/retrieval_libraries.py --items 1000000 --queries 1000  # HNSW: slow
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import types

import numpy as np

# FAISS's OpenMP threads spin at each barrier by default: on a CPU that other work also
# loads, that made one exact FAISS query 40 times slower here (0.46 ms against 19 ms).
# Set OMP_WAIT_POLICY=ACTIVE to time the default on an idle machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from retrieval_scale import K  # noqa: E402
from retrieval_scale import add_data_argument  # noqa: E402
from retrieval_scale import cpu_description  # noqa: E402
from retrieval_scale import median_ms  # noqa: E402
from retrieval_scale import recall  # noqa: E402

LIBRARIES = ("faiss", "hnswlib", "scann")


def reduced(items: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(items, axis=1)
    extra = np.sqrt(np.maximum(norms.max() ** 2 - norms**2, 0))[:, None]
    return np.ascontiguousarray(np.hstack([items, extra]), dtype=np.float32)


def padded(queries: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.hstack([queries, np.zeros((len(queries), 1))]),
                                dtype=np.float32)


def faiss_contenders(items: np.ndarray, kinds=("ivf", "hnsw")):
    import faiss

    n, dim = items.shape
    nlist = max(1, min(n // 39, int(round(4 * np.sqrt(n)))))
    sample = np.sort(np.random.default_rng(0).choice(n, min(n, 64 * nlist), replace=False))
    for name, reduce in (("FAISS IVF, inner product", False), ("FAISS IVF, L2 reduction", True)):
        if "ivf" not in kinds:
            break
        vectors = reduced(items) if reduce else items
        start = time.perf_counter()
        if reduce:
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, nlist)
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist,
                                       faiss.METRIC_INNER_PRODUCT)
        index.train(vectors[sample])
        index.add(vectors)
        built = time.perf_counter() - start
        prepare = padded if reduce else (lambda q: q)

        def search(queries, setting, index=index, prepare=prepare):
            index.nprobe = setting
            return index.search(prepare(queries), K)[1]

        yield f"{name} (nlist {nlist})", built, "nprobe", (16, 32, 64, 128), search
    for name, reduce in (("FAISS HNSW32, inner product", False),
                         ("FAISS HNSW32, L2 reduction", True)):
        if "hnsw" not in kinds:
            break
        vectors = reduced(items) if reduce else items
        start = time.perf_counter()
        index = faiss.IndexHNSWFlat(vectors.shape[1], 32,
                                    faiss.METRIC_L2 if reduce else faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 100
        index.add(vectors)
        built = time.perf_counter() - start
        prepare = padded if reduce else (lambda q: q)

        def search(queries, setting, index=index, prepare=prepare):
            index.hnsw.efSearch = setting
            return index.search(prepare(queries), K)[1]

        yield name, built, "ef_search", (32, 64, 128, 256), search


def hnswlib_contenders(items: np.ndarray):
    import hnswlib

    start = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=items.shape[1])
    index.init_index(len(items), ef_construction=100, M=16)
    index.set_num_threads(os.cpu_count())
    index.add_items(items)
    built = time.perf_counter() - start

    def search(queries, setting):
        index.set_ef(setting)
        return index.knn_query(queries, K)[0]

    yield "hnswlib M16, inner product", built, "ef", (32, 64, 128, 256), search


def scann_contenders(items: np.ndarray):
    import scann

    leaves = 2 * int(np.sqrt(len(items)))
    start = time.perf_counter()
    searcher = (scann.scann_ops_pybind.builder(items, K, "dot_product")
                .tree(num_leaves=leaves, num_leaves_to_search=max(1, leaves // 20),
                      training_sample_size=min(len(items), 250_000))
                .score_ah(2, anisotropic_quantization_threshold=0.2).reorder(100).build())
    built = time.perf_counter() - start

    def search(queries, setting):
        return searcher.search_batched(queries, leaves_to_search=setting)[0]

    settings = tuple(sorted({max(1, leaves // d) for d in (80, 40, 20, 10)}))
    yield f"ScaNN tree {leaves} leaves, AH, reorder 100", built, "leaves", settings, search


def import_scann(allow_stub: bool) -> str:
    """Imports scann; returns how (or raises ImportError with the reason)."""
    try:
        import scann  # noqa: F401

        return "imported"
    except ImportError:
        raise
    except Exception as error:  # the TensorFlow op's NotFoundError
        for name in [name for name in sys.modules if name.startswith("scann")]:
            del sys.modules[name]
        if not allow_stub:
            raise ImportError(f"import scann fails: {type(error).__name__}: "
                              f"{str(error)[:120]}") from None
        sys.modules["scann.scann_ops.py.scann_ops"] = types.ModuleType(
            "scann.scann_ops.py.scann_ops")
        import scann  # noqa: F401

        return (f"imported with its TensorFlow op stubbed out ({type(error).__name__} "
                "otherwise)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(parser)
    parser.add_argument("--preset", default="video-games", help="(default: %(default)s)")
    parser.add_argument("--items", type=int, default=0,
                        help="synthetic catalogue size (default: 0, the preset's own items)")
    parser.add_argument("--queries", type=int, default=5000,
                        help="user states queried (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=100,
                        help="single queries timed (default: %(default)s)")
    parser.add_argument("--libraries", nargs="+", choices=LIBRARIES, default=list(LIBRARIES))
    parser.add_argument("--faiss-indexes", nargs="+", choices=("ivf", "hnsw"),
                        default=["ivf", "hnsw"],
                        help="FAISS's index kinds (default: both; HNSW builds slowly on 1M)")
    parser.add_argument("--allow-scann-stub", action=argparse.BooleanOptionalAction,
                        default=True, help="measure ScaNN with its TensorFlow op stubbed out "
                        "where `import scann` fails (default: on)")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.data):
        parser.error(f"{args.data}: expected the Video Games file, received: no such file")

    from zoo import console

    console.quiet()
    import tensorflow as tf

    from kerasattn import data as kdata
    from zoo.recommender import data as recommender_data
    from zoo.recommender.model import NextItemRetriever

    print(f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC; {cpu_description()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    model = NextItemRetriever.from_preset(args.preset)
    read = recommender_data.read(args.data, item_labels=model.preprocessor.item_labels)
    histories = read.split.test_history
    rng = np.random.default_rng(0)
    chosen = rng.choice(len(histories), min(args.queries, len(histories)), replace=False)
    queries = model.user_states(kdata.pad_histories([histories[i] for i in chosen],
                                                    model.backbone.max_sequence_length))
    table = np.asarray(model.item_embeddings, dtype=np.float64)[1:]
    if args.items:
        table = rng.multivariate_normal(table.mean(axis=0), np.cov(table.T), size=args.items,
                                        method="cholesky")
    items = np.ascontiguousarray(table, dtype=np.float32)
    del table
    scores = tf.matmul(queries, items, transpose_b=True)
    expected = tf.math.top_k(scores, K)[1].numpy()
    del scores
    print(f"{len(items):,} items ({'synthetic' if args.items else args.preset}), width "
          f"{items.shape[1]}, {len(queries):,} user states\n")
    print("| library, index | build s | knob | setting | recall@10 | batch 1 ms | batch 256 ms |")
    print("|---|---|---|---|---|---|---|")
    sources = {"faiss": faiss_contenders, "hnswlib": hnswlib_contenders,
               "scann": scann_contenders}
    for library in args.libraries:
        try:
            if library == "scann":
                how = import_scann(args.allow_scann_stub)
                print(f"| (ScaNN {how}) | | | | | | |")
            contenders = (faiss_contenders(items, args.faiss_indexes) if library == "faiss"
                          else sources[library](items))
            for name, built, knob, settings, search in contenders:
                for setting in settings:
                    found = search(queries, setting)
                    search(queries[:1], setting)
                    one = median_ms(lambda: search(queries[:1], setting), args.repeats)
                    batch = median_ms(lambda: search(queries[:256], setting), 5)
                    print(f"| {name} | {built:.1f} | {knob} | {setting} | "
                          f"{recall(found, expected):.4f} | {one:.3f} | {batch:.1f} |",
                          flush=True)
        except ImportError as error:
            print(f"| {library}: skipped ({error}) | | | | | | |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
