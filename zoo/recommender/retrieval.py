"""Nearest-neighbour retrieval over a `NextItemRetriever`'s catalogue, on FAISS.

The retriever scores item `i` after a history by the inner product `state · E_i`
of the user state with the item embedding table `E` (`NextItemRetriever._scores`).
Exact scoring multiplies every state with all `N` rows; `RetrievalIndex` answers
the same question from an approximate nearest-neighbour index over `E[1:]`
(row 0 is the padding, never indexed), built with FAISS (`faiss-cpu`, the
`retrieval` extra: `pip install "kerasattn[retrieval]"`):

- `"ivf"` (the default): an inverted file (`faiss.IndexIVFFlat`): the items
  in `nlist` k-means cells, `nprobe` cells searched per query, exactly.
- `"hnsw"`: a graph index (`faiss.IndexHNSWFlat`).
- `"flat"`: exact inner product (`faiss.IndexFlatIP`), a reference.

Both approximate kinds search in Euclidean space after the standard reduction
of maximum inner-product search (Bachrach et al., 2014): each item gets one
more coordinate `sqrt(M² - |E_i|²)` (`M` the largest item norm) and each
query a 0, so that `|q' - E_i'|² = |q|² + M² - 2 q·E_i`: the nearest item is
the one of largest inner product. Clustering and graphs assume a metric,
which inner product is not (an item is not its own best match; items of
large norm crowd every cell): measured on the `video-games` preset's users,
HNSW's recall@10 at `ef_search=128` rises from 0.88 on inner product to 0.99,
and on a synthetic million items IVF's at `nprobe=64` from 0.84 to 0.975
(`benchmarks/RESULTS.md`, `retrieval_libraries.py`; HNSW on those unstructured
synthetic items was the exception, 0.85 against 0.79).

An index is one file (`save` / `load`, written to a temporary name and
renamed): the FAISS index and a JSON record of how it was built, with the
catalogue size, the width and a SHA-256 fingerprint of the item table, so
that an index is never queried for another model's items.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Optional

import numpy as np

from kerasattn._files import write_atomically

FORMAT_VERSION = 1
KINDS = ("ivf", "hnsw", "flat")
# The index file a preset folder (or a `.keras` file's assets) holds beside the model.
INDEX_FILE = "retrieval.index"
# Build and search options of each kind, with their defaults (None: from the catalogue).
OPTIONS = {
    # m: graph neighbours per node; ef_*: candidate list lengths (larger: better recall,
    # slower). m=32, ef_search=128 reach recall@10 0.99 on Video Games.
    "hnsw": {"m": 32, "ef_construction": 100, "ef_search": 128},
    # nlist: k-means cells (default 4·sqrt(N)); nprobe: cells searched per query;
    # train_size: items per cell that k-means learns from (FAISS warns below 39).
    "ivf": {"nlist": None, "nprobe": 64, "train_size": 64},
    "flat": {},
}
SEARCH_OPTIONS = {"hnsw": ("ef_search",), "ivf": ("nprobe",), "flat": ()}


def _faiss():
    """The `faiss` module, or a one-line error naming the extra that installs it."""
    try:
        import faiss
    except ImportError:
        raise ImportError("Expected the faiss-cpu package for a retrieval index, received: "
                          "none installed; pip install \"kerasattn[retrieval]\"") from None
    return faiss


def fingerprint(item_embeddings: np.ndarray) -> str:
    """The SHA-256 of a float32 `(N + 1, d)` item table (row 0 included), in hex."""
    table = np.ascontiguousarray(item_embeddings, dtype="<f4")
    return hashlib.sha256(table.tobytes()).hexdigest()


def _as_table(item_embeddings) -> np.ndarray:
    table = np.asarray(item_embeddings, dtype=np.float32)
    if table.ndim != 2 or table.shape[0] < 2 or table.shape[1] < 1:
        raise ValueError("Expected `item_embeddings` of shape (num_items + 1, dim) with "
                         f"num_items >= 1, received: shape={table.shape}")
    if not np.all(np.isfinite(table)):
        raise ValueError("Expected finite `item_embeddings`, received: NaN or infinity")
    return table


def _positive(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive int, received: {name}={value!r}")
    return int(value)


def _reduced(items: np.ndarray) -> tuple[np.ndarray, float]:
    """Items with the coordinate `sqrt(M² - |x|²)` appended (inner product to L2), and `M`."""
    norms = np.linalg.norm(items.astype(np.float64), axis=1)
    max_norm = float(norms.max())
    extra = np.sqrt(np.maximum(max_norm**2 - norms**2, 0.0)).astype(np.float32)
    return np.ascontiguousarray(np.hstack([items, extra[:, None]])), max_norm


class RetrievalIndex:
    """An approximate top-k inner-product index over a retriever's items.

    Build one with `RetrievalIndex.build(table, kind, **options)` (or
    `NextItemRetriever.build_index`), query it with `search`, and keep it
    with `save` / `load`.

    Attributes:
        kind: one of `KINDS`.
        num_items: the catalogue size `N` (item ids 1..N).
        dim: the embedding width `d`.
        options: the build and search options (see `OPTIONS`).
        fingerprint: the SHA-256 of the item table it was built from.
    """

    def __init__(self, index, metadata: dict):
        self._index = index
        self.metadata = metadata
        self._apply_search_options()

    # -- properties -------------------------------------------------------------

    @property
    def kind(self) -> str:
        return self.metadata["kind"]

    @property
    def num_items(self) -> int:
        return int(self.metadata["num_items"])

    @property
    def dim(self) -> int:
        return int(self.metadata["dim"])

    @property
    def options(self) -> dict:
        return dict(self.metadata["options"])

    @property
    def fingerprint(self) -> str:
        return self.metadata["fingerprint"]

    @property
    def nbytes(self) -> int:
        """The size of the serialized index, about what it holds in memory."""
        return int(_faiss().serialize_index(self._index).nbytes)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value}" for key, value in self.options.items())
        return (f"RetrievalIndex(kind={self.kind!r}, num_items={self.num_items}, "
                f"dim={self.dim}{', ' if options else ''}{options})")

    # -- building ---------------------------------------------------------------

    @classmethod
    def build(cls, item_embeddings, kind: str = "ivf", **options) -> "RetrievalIndex":
        """Indexes the rows 1..N of an item table for top-k inner product.

        Args:
            item_embeddings: float `(N + 1, d)`: row `i` is item `i`'s
                embedding, row 0 the padding (left out).
            kind: `"ivf"`, `"hnsw"` or `"flat"` (see the module's docstring).
            **options: the kind's options: `"ivf"`: `nlist` (4·sqrt(N)),
                `nprobe` (64), `train_size` (64 items per cell for k-means);
                `"hnsw"`: `m` (32), `ef_construction` (100), `ef_search`
                (128); `"flat"`: none.

        Returns:
            The index.

        Raises:
            ValueError: for an unknown kind or option, or a malformed table.
        """
        if kind not in KINDS:
            raise ValueError(f"Expected `kind` to be one of {KINDS}, received: kind={kind!r}")
        unknown = sorted(set(options) - set(OPTIONS[kind]))
        if unknown:
            raise ValueError(f"Expected options of a {kind!r} index among "
                             f"{sorted(OPTIONS[kind])}, received: {unknown[0]}="
                             f"{options[unknown[0]]!r}")
        table = _as_table(item_embeddings)
        items = np.ascontiguousarray(table[1:])
        num_items, dim = items.shape
        settings = {**OPTIONS[kind], **options}
        if kind == "ivf" and settings["nlist"] is None:
            settings["nlist"] = max(1, min(num_items // 39, int(round(4 * np.sqrt(num_items)))))
        for name, value in settings.items():
            settings[name] = _positive(name, value)
        faiss = _faiss()
        metadata = {"format_version": FORMAT_VERSION, "library": "faiss",
                    "library_version": faiss.__version__, "kind": kind,
                    "num_items": int(num_items), "dim": int(dim), "options": settings,
                    "fingerprint": fingerprint(table), "metric": "inner_product"}
        if kind == "flat":
            index = faiss.IndexFlatIP(dim)
            index.add(items)
            return cls(index, metadata)
        reduced, max_norm = _reduced(items)
        metadata["transform"] = "mips_to_l2"
        metadata["max_norm"] = max_norm
        if kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim + 1, settings["m"], faiss.METRIC_L2)
            index.hnsw.efConstruction = settings["ef_construction"]
        else:
            if settings["nlist"] > num_items:
                raise ValueError(f"Expected `nlist` <= {num_items} items, received: "
                                 f"nlist={settings['nlist']}")
            index = faiss.IndexIVFFlat(faiss.IndexFlatL2(dim + 1), dim + 1, settings["nlist"],
                                       faiss.METRIC_L2)
            sample = min(num_items, settings["nlist"] * settings["train_size"])
            # A fixed sample, so that the same table always gives the same cells.
            rows = np.sort(np.random.default_rng(0).choice(num_items, sample, replace=False))
            index.train(np.ascontiguousarray(reduced[rows]))
        index.add(reduced)
        return cls(index, metadata)

    def _apply_search_options(self) -> None:
        options = self.metadata["options"]
        if self.kind == "hnsw":
            self._index.hnsw.efSearch = int(options["ef_search"])
        elif self.kind == "ivf":
            self._index.nprobe = int(options["nprobe"])

    def set_search_options(self, **options) -> None:
        """Changes how hard `search` looks (kept by `save`).

        Args:
            **options: `ef_search` for `"hnsw"`, `nprobe` for `"ivf"`.
        """
        allowed = SEARCH_OPTIONS[self.kind]
        for name, value in options.items():
            if name not in allowed:
                raise ValueError(f"Expected search options of a {self.kind!r} index among "
                                 f"{list(allowed)}, received: {name}={value!r}")
            self.metadata["options"][name] = _positive(name, value)
        self._apply_search_options()

    # -- checking and searching -------------------------------------------------

    def check(self, item_embeddings, source: str = "the model") -> None:
        """Raises a one-line `ValueError` unless this index was built from `item_embeddings`.

        Args:
            item_embeddings: the `(N + 1, d)` table the index is to serve.
            source: what the table belongs to, for the message.
        """
        table = np.asarray(item_embeddings)
        where = self.metadata.get("path", "the index")
        if table.shape != (self.num_items + 1, self.dim):
            raise ValueError(
                f"{where}: expected an index for {source}'s {table.shape[0] - 1} items of width "
                f"{table.shape[1]}, received: one built for {self.num_items} items of width "
                f"{self.dim}")
        if fingerprint(table) != self.fingerprint:
            raise ValueError(f"{where}: expected an index built from {source}'s item embeddings, "
                             "received: one built from other embeddings (another model, or "
                             "weights changed since); rebuild it (build_index, or zoo index "
                             "recommender), or recommend without it (--exact)")

    def search(self, queries, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The `k` items of largest inner product with each query, by the index.

        Args:
            queries: float `(B, d)` user states.
            k: items per query (at most `num_items`).

        Returns:
            `(ids, scores)`: int64 item ids (1..N; 0 where the index found
            fewer than `k`, as an IVF index can) and their float32 inner
            products (`-inf` there), `(B, k)`, best first.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"Expected queries of shape (B, {self.dim}), received: "
                             f"shape={queries.shape}")
        k = _positive("k", k)
        if k > self.num_items:
            raise ValueError(f"Expected `k` <= {self.num_items} items, received: k={k}")
        if self.metadata.get("transform") == "mips_to_l2":
            augmented = np.hstack([queries, np.zeros((len(queries), 1), np.float32)])
            distances, rows = self._index.search(augmented, k)
            # |q' - x'|² = |q|² + M² - 2 q·x, so q·x = (|q|² + M² - distance) / 2.
            constant = np.sum(queries.astype(np.float64) ** 2, axis=1, keepdims=True) + (
                self.metadata["max_norm"] ** 2)
            scores = ((constant - distances) / 2).astype(np.float32)
        else:
            scores, rows = self._index.search(queries, k)
        missing = rows < 0
        return np.where(missing, 0, rows + 1), np.where(missing, -np.inf, scores).astype(
            np.float32)

    # -- files ------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to one file, atomically (a temporary name, then a rename).

        Args:
            path: the file; its folder must exist.
        """
        faiss = _faiss()
        folder = Path(path).resolve().parent
        if not folder.is_dir():
            raise ValueError(f"{path}: expected a file in an existing folder, received: no "
                             "such folder")
        data = faiss.serialize_index(self._index)
        metadata = {key: value for key, value in self.metadata.items() if key != "path"}
        text = np.frombuffer(json.dumps(metadata).encode("utf-8"), dtype=np.uint8)

        def write(temporary: str) -> None:
            with open(temporary, "wb") as file:
                np.savez(file, metadata=text, index=data)

        write_atomically(path, write)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RetrievalIndex":
        """Reads an index written by `save`.

        Raises:
            ValueError: naming the file if it is missing or not an index file.
        """
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: expected a retrieval index file, received: no such file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                metadata = json.loads(bytes(archive["metadata"]).decode("utf-8"))
                data = archive["index"]
        except (OSError, ValueError, KeyError, EOFError) as error:
            raise ValueError(f"{path}: expected a retrieval index file (from build_index), "
                             f"received: unreadable ({type(error).__name__})") from None
        if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: expected a retrieval index of format {FORMAT_VERSION}, "
                             f"received: {metadata.get('format_version')!r}")
        faiss = _faiss()
        index = faiss.deserialize_index(np.ascontiguousarray(data))
        metadata["path"] = os.fspath(path)
        return cls(index, metadata)


def load_if_present(folder: str | os.PathLike) -> Optional[RetrievalIndex]:
    """The index saved in `folder` (a preset's, or a `.keras` file's assets), or `None`."""
    path = Path(folder) / INDEX_FILE
    return RetrievalIndex.load(path) if path.is_file() else None
