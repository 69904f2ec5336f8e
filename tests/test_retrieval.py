"""Tests of the recommender's nearest-neighbour retrieval (zoo.recommender.retrieval):
recall against exact scoring, files, exact `exclude_seen`, the command line, errors."""

import importlib.util
import json
import os
import tempfile
import unittest

import keras
import numpy as np
import tensorflow as tf

from tests.test_attention_transformer import run_cli
from tests.test_recommender import LENGTH
from tests.test_recommender import NUM_ITEMS
from tests.test_recommender import tiny_retriever
from zoo.recommender.model import NextItemRetriever
from zoo.recommender.recipe import recommend

HAS_FAISS = importlib.util.find_spec("faiss") is not None


def require_faiss(test):
    """Skips `test` without faiss-cpu, except in CI (which installs it with `.[test]`)."""
    if HAS_FAISS or os.environ.get("CI") == "true":
        return test
    return unittest.skip("faiss-cpu is not installed (pip install \"kerasattn[retrieval]\")")(
        test)


def exact_top(queries, table, k, seen=None):
    """NumPy reference: the `k` items (1..N) of largest inner product, seen ones left out."""
    scores = queries @ table[1:].T
    if seen is not None:
        for row, items in enumerate(seen):
            scores[row, np.asarray(sorted(items), int) - 1] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k] + 1


def recall(found, expected):
    return np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, expected)])


def synthetic_catalogue(items=2000, dim=16, queries=200, seed=0):
    """A clustered catalogue with varied norms (as trained item embeddings are) and
    queries near it; row 0 of the table is the padding."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    table = centres[rng.integers(0, 20, items)] + 0.5 * rng.normal(size=(items, dim))
    table *= rng.uniform(0.5, 2.0, (items, 1))
    table = np.vstack([np.zeros((1, dim)), table]).astype(np.float32)
    states = (centres[rng.integers(0, 20, queries)] + rng.normal(size=(queries, dim)))
    return table, states.astype(np.float32)


class SingleThreaded(tf.test.TestCase):
    """FAISS on one thread: HNSW's graph (and so its answers) then never varies."""

    def setUp(self):
        super().setUp()
        if HAS_FAISS:
            import faiss

            threads = faiss.omp_get_max_threads()
            faiss.omp_set_num_threads(1)
            self.addCleanup(faiss.omp_set_num_threads, threads)


@require_faiss
class IndexTest(SingleThreaded):
    def test_recall_against_exact_inner_product(self):
        from zoo.recommender.retrieval import RetrievalIndex

        table, states = synthetic_catalogue()
        expected = exact_top(states, table, 10)
        for kind, options, least in (("flat", {}, 1.0), ("hnsw", {}, 0.95),
                                     ("ivf", {"nprobe": 16}, 0.95)):
            index = RetrievalIndex.build(table, kind, **options)
            self.assertEqual(kind != "flat", index.metadata.get("transform") == "mips_to_l2")
            ids, scores = index.search(states, 10)
            self.assertGreaterEqual(recall(ids, expected), least, kind)
            # Scores are inner products (HNSW's are recovered from its L2 distances).
            reference = np.take_along_axis(states @ table.T, ids, axis=1)
            self.assertAllClose(reference, scores, atol=1e-3, msg=kind)
            self.assertTrue(np.all(np.diff(scores, axis=1) <= 1e-5), kind)
            self.assertTrue(np.all(ids >= 1), kind)

    def test_save_load_round_trip_is_atomic(self):
        from zoo.recommender.retrieval import RetrievalIndex

        table, states = synthetic_catalogue(items=500)
        for kind in ("hnsw", "ivf", "flat"):
            index = RetrievalIndex.build(table, kind)
            with tempfile.TemporaryDirectory() as folder:
                path = os.path.join(folder, "items.index")
                index.save(path)
                self.assertEqual(["items.index"], os.listdir(folder))  # no temporary left
                loaded = RetrievalIndex.load(path)
                self.assertEqual(index.options, loaded.options)
                self.assertEqual(index.fingerprint, loaded.fingerprint)
                for got, want in zip(loaded.search(states, 10), index.search(states, 10)):
                    self.assertAllEqual(want, got)
        # Search options travel with the file.
        index = RetrievalIndex.build(table, "hnsw")
        index.set_search_options(ef_search=300)
        with tempfile.TemporaryDirectory() as folder:
            index.save(os.path.join(folder, "a.index"))
            self.assertEqual(300, RetrievalIndex.load(
                os.path.join(folder, "a.index")).options["ef_search"])

    def test_bad_input_errors(self):
        from zoo.recommender.retrieval import RetrievalIndex

        table, states = synthetic_catalogue(items=100)
        with self.assertRaisesRegex(ValueError, "Expected `kind` to be one of .*kind='annoy'"):
            RetrievalIndex.build(table, "annoy")
        with self.assertRaisesRegex(ValueError, "options of a 'hnsw' index .*nprobe=3"):
            RetrievalIndex.build(table, "hnsw", nprobe=3)
        with self.assertRaisesRegex(ValueError, "`m` to be a positive int, received: m=0"):
            RetrievalIndex.build(table, "hnsw", m=0)
        with self.assertRaisesRegex(ValueError, r"shape \(num_items \+ 1, dim\)"):
            RetrievalIndex.build(table[0], "flat")
        with self.assertRaisesRegex(ValueError, "finite"):
            RetrievalIndex.build(np.full((3, 2), np.nan), "flat")
        index = RetrievalIndex.build(table, "flat")
        with self.assertRaisesRegex(ValueError, r"queries of shape \(B, 16\)"):
            index.search(states[:, :4], 10)
        with self.assertRaisesRegex(ValueError, "`k` <= 100 items, received: k=101"):
            index.search(states, 101)
        with self.assertRaisesRegex(ValueError, "search options of a 'flat' index"):
            index.set_search_options(ef_search=10)
        with tempfile.TemporaryDirectory() as folder:
            missing = os.path.join(folder, "missing.index")
            with self.assertRaisesRegex(ValueError, "missing.index: expected a retrieval "
                                                    "index file, received: no such file"):
                RetrievalIndex.load(missing)
            garbage = os.path.join(folder, "garbage.index")
            with open(garbage, "w") as file:
                file.write("not an index")
            with self.assertRaisesRegex(ValueError, "garbage.index: expected a retrieval "
                                                    "index file .*unreadable"):
                RetrievalIndex.load(garbage)
            with self.assertRaisesRegex(ValueError, "existing folder"):
                index.save(os.path.join(folder, "no", "such.index"))


def long_histories(seed=0, batch=3, width=4 * LENGTH):
    """Histories of `width` > L distinct items each (the first ones outside the model's view)."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(NUM_ITEMS)[:width] + 1 for _ in range(batch)]).astype(
        "int32")


class ExactSeenTest(SingleThreaded):
    def test_recommend_leaves_out_every_seen_item_of_a_history_longer_than_l(self):
        model = tiny_retriever()
        ids = long_histories()
        # Every unseen item, and no more: any seen item among them is a failure
        # (before, only the last L items of the history were left out).
        top_k = NUM_ITEMS - ids.shape[1]
        items, scores = model.recommend(ids, top_k=top_k, exclude_seen=True)
        states = np.asarray(model.backbone({"item_ids": ids[:, -LENGTH:]})["sequence_output"][
            :, -1])
        expected = exact_top(states, np.asarray(model.item_embeddings), top_k,
                             seen=[set(row) for row in ids])
        self.assertAllEqual(expected, items)
        for row, history in zip(items, ids):
            self.assertFalse(set(row.tolist()) & set(history.tolist()))
        self.assertAllClose(states, model.user_states(ids), atol=1e-5)
        # The state still encodes the last L items only.
        self.assertAllClose(model.score_all(ids), model.score_all(ids[:, -LENGTH:]))
        # Asking for more than the unseen items: the seen ones come last.
        items, scores = model.recommend(ids, top_k=top_k + 1, exclude_seen=True)
        self.assertAllEqual(expected, items[:, :top_k])
        self.assertAllClose(np.full(3, -1e9), scores[:, -1])

    @require_faiss
    def test_index_path_matches_exact_and_leaves_out_every_seen_item(self):
        model = tiny_retriever()
        ids = long_histories(1)
        top_k = NUM_ITEMS - ids.shape[1]
        exact = model.recommend(ids, top_k=top_k)
        for kind in ("flat", "hnsw", "ivf"):
            index = model.build_index(kind, **({"nlist": 2, "nprobe": 2} if kind == "ivf"
                                               else {}))
            self.assertIs(index, model.retrieval_index)
            items, scores = model.recommend(ids, top_k=top_k, index=index)
            # A catalogue this small: every index finds the exact answer.
            self.assertAllEqual(exact[0], items, kind)
            self.assertAllClose(exact[1], scores, atol=1e-5, msg=kind)
            # More than the unseen items: the index cannot fill the rows, the
            # exact fallback does (seen items last, as the exact path).
            self.assertAllEqual(model.recommend(ids, top_k=top_k + 2)[0],
                                model.recommend(ids, top_k=top_k + 2, index=index)[0], kind)
            both = model.recommend(ids, top_k=5, exclude_seen=False, index=index)
            self.assertAllEqual(model.recommend(ids, top_k=5, exclude_seen=False)[0], both[0])

    @require_faiss
    def test_cli_path_with_a_long_history(self):
        model = tiny_retriever()
        model.build_index("hnsw")
        history = [f"i{n}" for n in range(1, 3 * LENGTH + 1)]
        top = NUM_ITEMS - len(history)
        for index in (None, model.retrieval_index):
            result = recommend(model, ",".join(history), top=top, index=index)
            returned = [entry["item"] for entry in result["items"]]
            self.assertLen(returned, top)
            self.assertFalse(set(history) & set(returned))

    def test_recommend_input_errors(self):
        model = tiny_retriever()
        with self.assertRaisesRegex(ValueError, r"item ids in 0..30 .*from 0 to 31"):
            model.recommend(np.array([[0, 31]]))
        with self.assertRaisesRegex(ValueError, "int histories"):
            model.recommend(np.zeros((2, 3), "float32"))
        with self.assertRaisesRegex(ValueError, "RetrievalIndex, a path or None"):
            model.recommend(np.array([[1, 2]]), index=3)


@require_faiss
class ModelIndexTest(SingleThreaded):
    def test_index_saved_and_loaded_with_presets_and_keras_files(self):
        model = tiny_retriever()
        ids = long_histories(2)
        index = model.build_index("hnsw", m=8)
        expected = model.recommend(ids, top_k=4, index=index)
        with tempfile.TemporaryDirectory() as folder:
            preset = os.path.join(folder, "preset")
            model.save_to_preset(preset)
            self.assertIn("retrieval.index", os.listdir(preset))
            loaded = NextItemRetriever.from_preset(preset)
            self.assertEqual({"m": 8, "ef_construction": 100, "ef_search": 128},
                             loaded.retrieval_index.options)
            self.assertAllEqual(expected[0], loaded.recommend(
                ids, top_k=4, index=loaded.retrieval_index)[0])
            path = os.path.join(folder, "model.keras")
            model.save(path)
            reloaded = keras.saving.load_model(path)
            self.assertAllEqual(expected[0], reloaded.recommend(
                ids, top_k=4, index=reloaded.retrieval_index)[0])
            # A stale index (the weights changed since) still loads, and is refused on use.
            model.item_embeddings.assign(model.item_embeddings * 2.0)
            model.save_to_preset(preset)
            stale = NextItemRetriever.from_preset(preset)
            with self.assertRaisesRegex(ValueError, "retrieval.index: expected an index built "
                                                    "from the model's item embeddings"):
                stale.recommend(ids, index=stale.retrieval_index)
            model.save(path)
            with self.assertRaisesRegex(ValueError, "the .keras file's retrieval index: "
                                                    "expected an index built from"):
                reloaded = keras.saving.load_model(path)
                reloaded.recommend(ids, index=reloaded.retrieval_index)
            # Saved without an index, a preset loses the stale file.
            model.retrieval_index = None
            model.save_to_preset(preset)
            self.assertNotIn("retrieval.index", os.listdir(preset))
            self.assertIsNone(NextItemRetriever.from_preset(preset).retrieval_index)

    def test_index_of_another_model_is_refused(self):
        model, other = tiny_retriever(), tiny_retriever()
        ids = long_histories()
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "other.index")
            other.build_index("flat").save(path)
            # Same catalogue and width, other weights.
            with self.assertRaisesRegex(ValueError, "other.index: expected an index built from "
                                                    "the model's item embeddings"):
                model.recommend(ids, index=path)
            with self.assertRaisesRegex(ValueError, "other embeddings"):
                model.retrieval_index = other.retrieval_index
            from zoo.recommender.retrieval import RetrievalIndex

            bigger = RetrievalIndex.build(np.ones((NUM_ITEMS + 5, 8), "float32"), "flat")
            with self.assertRaisesRegex(ValueError, "index for the model's 30 items of width "
                                                    "8, received: one built for 34 items"):
                model.recommend(ids, index=bigger)
            with self.assertRaisesRegex(ValueError, "no such file"):
                model.recommend(ids, index=os.path.join(folder, "missing.index"))


@require_faiss
class CommandLineTest(SingleThreaded):
    def test_index_then_predict(self):
        model = tiny_retriever()
        history = ",".join(f"i{n}" for n in range(1, 3 * LENGTH + 1))
        with tempfile.TemporaryDirectory() as folder:
            preset, indexed = os.path.join(folder, "preset"), os.path.join(folder, "indexed")
            model.save_to_preset(preset)
            code, out, err = run_cli(["index", "recommender", "--preset", preset, "--out",
                                      indexed, "--kind", "hnsw", "--m", "8"])
            self.assertEqual(0, code, err)
            self.assertIn("RetrievalIndex(kind='hnsw', num_items=30", out)
            self.assertTrue(os.path.isfile(os.path.join(indexed, "retrieval.index")))

            def predict(*flags):
                code, out, err = run_cli(["predict", "recommender", "--history", history,
                                          "--top", "5", "--json", *flags])
                self.assertEqual(0, code, err)
                return [entry["item"] for entry in json.loads(out)["items"]]

            exact = predict("--preset", preset)
            self.assertFalse(set(exact) & set(history.split(",")))
            # The preset's own index, a given index file, and --exact agree here.
            self.assertEqual(exact, predict("--preset", indexed))
            self.assertEqual(exact, predict("--preset", preset, "--index",
                                            os.path.join(indexed, "retrieval.index")))
            self.assertEqual(exact, predict("--preset", indexed, "--exact"))

            code, _, err = run_cli(["predict", "recommender", "--preset", preset, "--history",
                                    history, "--index", os.path.join(folder, "missing.index")])
            self.assertEqual(2, code)
            self.assertRegex(err, r"^zoo predict: .*missing.index: expected a retrieval index "
                                  r"file, received: no such file\n$")
            other = tiny_retriever()  # freshly initialised: other embeddings
            other_index = os.path.join(folder, "other.index")
            other.build_index("flat").save(other_index)
            code, _, err = run_cli(["predict", "recommender", "--preset", preset, "--history",
                                    history, "--index", other_index])
            self.assertEqual(2, code)
            self.assertRegex(err, r"^zoo predict: .*other.index: expected an index built "
                                  r"from the model's item embeddings.*\n$")
            code, _, err = run_cli(["index", "recommender", "--preset", preset, "--out",
                                    indexed, "--kind", "flat", "--m", "8"])
            self.assertEqual(2, code)
            self.assertEqual("zoo index: expected --m with --kind hnsw, received: --kind flat\n",
                             err)
            code, _, err = run_cli(["index", "recommender", "--preset", preset, "--out",
                                    indexed, "--nprobe", "0", "--kind", "ivf"])
            self.assertEqual("zoo index: expected --nprobe > 0, received: 0\n", err)


if __name__ == "__main__":
    tf.test.main()
