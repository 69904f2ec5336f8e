"""The sequential recommender's recipe: train, predict, evaluate.

`python -m zoo train recommender --data FILE_OR_DIR --out OUT` reads an
interaction log: a SASRec-format file (`user item` per line, each user's
lines in time order, as the SASRec repository ships every Amazon category),
or a MovieLens folder with `u.data` (and `u.item` / `u.user`, whose genres,
titles, ages, genders and occupations it then uses). Each user's last item
is the test target, the one before the validation target, the rest
training (SASRec's split); the same command trains on any such file.

`--task retrieval` (the default) trains SASRec, the `NextItemRetriever`,
with `--loss` `full_softmax` (the default), `sampled_softmax` (with
`--num-negatives` shared negatives, uniform or `--negative-sampling
popularity` with the logQ correction) or `bce` (SASRec's own, one negative
per position); `--task scorer` the DIN/BST-style `CandidateScorer` (BCE on
the next item and `--num-negatives` sampled items; `--no-side-features`
for the ablation). After every epoch every validation user is scored
(retrieval: HR@10 and NDCG@10 on 100 sampled negatives and on the full
catalogue; scorer: AUC, HR@10 and NDCG@10 on 100 sampled negatives);
training stops early on validation (sampled NDCG@10, or AUC), the best
epoch is restored, and the test item is scored once, at the end. It
writes to `OUT`:

- `model.keras`: the task with its preprocessor (the item map) in one file;
- `preset/`: the same as a preset folder (`assets/items.txt`, and
  `assets/titles.txt` where the data has titles);
- `metrics.json`: the options, validation and test under both protocols,
  per-epoch history and times, wall time;
- `training_curves.png` and `attention_heatmap.png` (a validation user's
  history);
- `logs/`: TensorBoard (loss, validation metrics, attention maps over a
  few users' histories);
- `run/`: the epoch record, best weights and, while it trains,
  `BackupAndRestore`'s state: run the same command again after an
  interruption and it resumes.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

from zoo import console
from zoo import registry
from zoo.recommender.defaults import BUDGET_STEPS
from zoo.recommender.defaults import MIN_EPOCHS
from zoo.recommender.defaults import MIN_PATIENCE_EPOCHS
from zoo.recommender.defaults import PATIENCE_STEPS

MODEL_NAME = "recommender"
# Methods of `zoo explain recommender` (see zoo/recommender/explanations.py); the
# default is the best of the card's faithfulness table. Raw attention is left
# out: a causal self-attention's weights averaged over every query say little
# about the last user state.
EXPLAIN_METHODS = ("rollout", "flow", "gradient_rollout", "input_x_gradient",
                   "integrated_gradients", "random")
BEST_EXPLAIN_METHOD = "integrated_gradients"
TOP_HISTORY_ITEMS = 3  # what `predict` shows of the first recommendation's explanation
# History items `zoo faithfulness recommender` removes per user.
TOP_K = 3
# --num-negatives by task; `RecommenderRecipe.train` sets it, when unset, before `train.run`.
NEGATIVES = {"retrieval": 256, "scorer": 8}


class RecommenderRecipe(registry.Recipe):
    """The recipe of `zoo.recommender` (see the module's docstring)."""

    name = MODEL_NAME
    package = "zoo.recommender"
    default_preset = "video-games"
    summary = ("sequential recommender (SASRec retrieval, DIN/BST candidate scorer) on "
               "interaction logs")
    description = __doc__

    # -- train ----------------------------------------------------------------

    def add_train_arguments(self, parser: argparse.ArgumentParser) -> None:
        add = registry.option_adder(parser)
        add("--data", "a SASRec-format file (user item per line, in time order) or a "
            "MovieLens folder with u.data", required=True)
        add("--out", "output folder; running again with the same folder resumes", required=True)
        add("--task", "retrieval: SASRec over the whole catalogue; scorer: DIN/BST target "
            "attention over given candidates", choices=("retrieval", "scorer"),
            default="retrieval")
        add("--loss", "retrieval loss", choices=("full_softmax", "sampled_softmax", "bce"),
            default="full_softmax")
        add("--num-negatives", "negatives per batch of the sampled softmax (default: "
            f"{NEGATIVES['retrieval']}) or per example of the scorer (default: "
            f"{NEGATIVES['scorer']}: its attention MLP runs over every candidate-item pair)",
            type=int, default=None)
        add("--negative-sampling", "sampled-softmax negatives: uniform, or by training "
            "popularity with the logQ correction", choices=("uniform", "popularity"),
            default="uniform")
        parser.add_argument("--sort-by-length", action=argparse.BooleanOptionalAction,
                            default=True, help="retrieval: batch users of like history "
                            "length, each batch cut to its longest history (the same "
                            "per-position loss, a fraction of the work on short histories; "
                            "default: on)")
        parser.add_argument("--side-features", action=argparse.BooleanOptionalAction,
                            default=True, help="scorer: use MovieLens genres and user "
                            "age, gender, occupation when the data has them (default: on)")
        add("--min-count", "keep the k-core of the log (users and items with >= k "
            "interactions)", type=int, default=None)
        add("--max-length", "history positions L (default: from the data: the 90th "
            "percentile of the history lengths within [50, 200])", type=int, default=None)
        add("--hidden-dim", "model width", type=int, default=50)
        add("--layers", "Transformer blocks", type=int, default=2)
        add("--heads", "attention heads", type=int, default=1)
        add("--intermediate-dim", "feed-forward width (default: --hidden-dim)", type=int,
            default=None)
        add("--dropout", "dropout on the embeddings and in the blocks (default: from the "
            "data: 0.5 where users average under 20 interactions, as SASRec on Amazon data, "
            "else 0.2)", type=float, default=None)
        add("--attention-dropout", "dropout on attention weights", type=float, default=0.0)
        add("--epochs", "maximum epochs, the cosine schedule's length (default: from the "
            f"data: at least {MIN_EPOCHS} epochs and {BUDGET_STEPS:,} steps)", type=int,
            default=None)
        add("--batch-size", "users (retrieval) or examples (scorer) per batch", type=int,
            default=128)
        add("--learning-rate", "peak learning rate", type=float, default=1e-3)
        add("--warmup-steps", "linear warmup steps", type=int, default=100)
        add("--weight-decay", "AdamW weight decay", type=float, default=0.0)
        add("--patience", "early stopping: epochs without a better validation metric "
            f"(default: from the data: at least {MIN_PATIENCE_EPOCHS} epochs and "
            f"{PATIENCE_STEPS:,} steps)", type=int, default=None)
        add("--eval-batch-size", "users per scoring batch in evaluation", type=int,
            default=1024)
        add("--seed", "random seed", type=int, default=1)
        registry.add_device_arguments(add)
        add("--verbose", console.VERBOSE_HELP, type=int, choices=(0, 1, 2), default=None)

    def train(self, args: argparse.Namespace) -> str:
        from zoo.recommender import train

        if args.num_negatives is None:
            args.num_negatives = NEGATIVES[args.task]
        metrics = train.run(args, self.name)
        valid, test = metrics["valid"], metrics["test"]
        if metrics["task"] == "retrieval":
            line = (f"validation HR@10 {valid['sampled']['hr@10']:.4f}, NDCG@10 "
                    f"{valid['sampled']['ndcg@10']:.4f} (full: HR@10 {valid['full']['hr@10']:.4f}"
                    f", NDCG@10 {valid['full']['ndcg@10']:.4f}); test HR@10 "
                    f"{test['sampled']['hr@10']:.4f}, NDCG@10 {test['sampled']['ndcg@10']:.4f}")
        else:
            line = (f"validation AUC {valid['auc']:.4f}, HR@10 {valid['hr@10']:.4f}; test AUC "
                    f"{test['auc']:.4f}, HR@10 {test['hr@10']:.4f}")
        return f"{line} (best epoch {metrics['best_epoch']}); wrote {args.out}"

    # -- predict --------------------------------------------------------------

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--history", required=True,
                            help="the user's items, oldest first, comma-separated labels as "
                                 "in the data file (such as 12,55,301)")
        parser.add_argument("--top", type=int, default=10,
                            help="items to recommend (default: %(default)s)")
        parser.add_argument("--include-seen", action="store_true",
                            help="allow items of the history among the recommendations")
        parser.add_argument("--candidates", default=None,
                            help="a candidate scorer's items to score, comma-separated (a "
                                 "retriever ranks the whole catalogue without them)")
        registry.add_model_source_arguments(parser, self.default_preset)
        serving = parser.add_mutually_exclusive_group()
        serving.add_argument("--index", default=None, metavar="FILE",
                             help="a retriever's nearest-neighbour index (such as "
                                  "PRESET/retrieval.index, from `zoo index recommender`) to "
                                  "take the recommendations from (default: the preset's own "
                                  "index if it has one, else exact scoring)")
        serving.add_argument("--exact", action="store_true",
                             help="score every item, even where the preset has an index")
        parser.add_argument("--json", action="store_true", help="print one JSON object")

    def predict(self, args: argparse.Namespace) -> None:
        import json

        model = self.load(args.preset, args.model)
        index = None
        if args.index is not None or args.exact:
            if not hasattr(model, "recommend"):
                raise ValueError("expected a retriever with --index or --exact, received: a "
                                 "candidate scorer")
            index = None if args.exact else args.index
        elif getattr(model, "retrieval_index", None) is not None:
            index = model.retrieval_index
        result = recommend(model, args.history, args.top, not args.include_seen,
                           args.candidates, index=index)
        if hasattr(model, "recommend") and result["items"]:
            # The first recommendation explained by the card's best method.
            from zoo.recommender.explanations import explain_history

            explained = explain_history(model, args.history, BEST_EXPLAIN_METHOD,
                                        item=result["items"][0]["item"])
            ranked = sorted(explained["items"], key=lambda entry: -entry["score"])
            result["explanation"] = {
                "method": BEST_EXPLAIN_METHOD, "item": result["items"][0]["item"],
                "history": [{key: entry[key] for key in ("item", "score", "title")
                             if key in entry} for entry in ranked[:TOP_HISTORY_ITEMS]]}
        if args.json:
            print(json.dumps(result))
            return
        if result["unknown"]:
            print(f"(items the model does not know, left out: {', '.join(result['unknown'])})")
        for rank, entry in enumerate(result["items"], start=1):
            title = f"  {entry['title']}" if entry.get("title") else ""
            print(f"{rank:>3}. {entry['item']:<12} {entry['score']:9.4f}{title}")
        if "explanation" in result:
            explanation = result["explanation"]
            shown = ", ".join(f"{_described(entry)}" for entry in explanation["history"])
            print(f"1. {explanation['item']} comes most from (by {explanation['method']}): "
                  f"{shown}")

    # -- index ----------------------------------------------------------------

    def add_index_arguments(self, parser: argparse.ArgumentParser) -> None:
        from zoo.recommender.retrieval import KINDS

        parser.add_argument("--kind", choices=KINDS, default="ivf",
                            help="FAISS index: ivf, k-means cells; hnsw, a graph (both on "
                                 "the inner-product-to-L2 reduction); flat, exact (default: "
                                 "%(default)s)")
        for flag, text in (("--nlist", "ivf: k-means cells (default: 4·sqrt(items))"),
                           ("--nprobe", "ivf: cells searched per query (default: 64)"),
                           ("--m", "hnsw: graph neighbours per item (default: 32)"),
                           ("--ef-construction", "hnsw: candidates kept while building "
                                                 "(default: 100)"),
                           ("--ef-search", "hnsw: candidates kept per query (default: 128)")):
            parser.add_argument(flag, type=int, default=None, help=text)

    def build_index(self, model, args: argparse.Namespace) -> str:
        import time

        from zoo import training
        from zoo.recommender.model import NextItemRetriever
        from zoo.recommender.retrieval import INDEX_FILE
        from zoo.recommender.retrieval import OPTIONS

        if not isinstance(model, NextItemRetriever):
            raise ValueError(f"expected a retriever (a NextItemRetriever) to index, received: "
                             f"a {type(model).__name__}")
        given = {name: getattr(args, name) for name in ("m", "ef_construction", "ef_search",
                                                        "nlist", "nprobe")
                 if getattr(args, name) is not None}
        for name in given:
            if name not in OPTIONS[args.kind]:
                raise ValueError(f"expected --{name.replace('_', '-')} with --kind "
                                 f"{'hnsw' if name in OPTIONS['hnsw'] else 'ivf'}, received: "
                                 f"--kind {args.kind}")
        training.check_option_ranges(args, positive=tuple(given))
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out}: expected a preset folder, received: a file")
        start = time.perf_counter()
        try:
            index = model.build_index(args.kind, **given)
        except ImportError as error:
            raise ValueError(str(error)) from None
        seconds = time.perf_counter() - start
        from zoo import preset as preset_format

        metadata = {}
        if args.model is None:
            metadata = preset_format.read_metadata(
                preset_format.find(args.preset or self.default_preset, self.package))
        model.save_to_preset(out, description=metadata.get("description", ""),
                             metrics=metadata.get("metrics") or None)
        size = (out / INDEX_FILE).stat().st_size / 2**20
        return (f"built {index!r} in {seconds:.1f} s; wrote {out} ({INDEX_FILE}: {size:.1f} MB); "
                f"zoo predict {self.name} --preset {out} uses it")

    # -- evaluate -------------------------------------------------------------

    def add_evaluate_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--batch-size", type=int, default=1024,
                            help="users per scoring batch (default: %(default)s)")

    def load(self, preset: Optional[str], model_path: Optional[str]):
        from zoo.recommender.model import CandidateScorer
        from zoo.recommender.model import NextItemRetriever

        if model_path is None:
            from zoo import preset as preset_format

            folder = preset_format.find(preset or self.default_preset, self.package)
            task = preset_format.component_class(folder / preset_format.TASK_CONFIG_FILE)
            cls = CandidateScorer if task == "CandidateScorer" else NextItemRetriever
            return cls.from_preset(folder)
        return registry.load_task_file(model_path, (NextItemRetriever, CandidateScorer))

    def evaluate(self, model, data: Path, args: argparse.Namespace) -> dict:
        from zoo.recommender import data as recommender_data

        if args.batch_size <= 0:
            raise ValueError(f"expected --batch-size > 0, received: {args.batch_size}")
        read = recommender_data.read(data, item_labels=model.preprocessor.item_labels)
        results = {}
        for which in ("valid", "test"):
            evaluation = recommender_data.evaluation_set(read, which)
            if hasattr(model, "score_all"):
                scores = recommender_data.evaluate_retriever(model, evaluation, args.batch_size)
                results[which] = {"sampled": scores["sampled"], "full": scores["full"]}
            else:
                if model.num_genres and read.genres is None or (
                        model.user_feature_sizes and read.user_features is None):
                    raise ValueError(f"{data}: expected MovieLens side features (u.item, "
                                     "u.user) for this scorer, received: none")
                scores = recommender_data.evaluate_scorer(model, read, evaluation,
                                                          args.batch_size)
                results[which] = {key: scores[key] for key in ("auc", "hr@10", "ndcg@10")}
        results["users"] = int(len(read.split.users))
        return results

    # -- prune ----------------------------------------------------------------

    def prune_setup(self, model, args: argparse.Namespace):
        """For the retriever (SASRec): validation NDCG@10 of the sampled protocol
        on each user's validation item, reported on the test item; importance
        and recovery on the training sequences with the task's own loss;
        exported and timed as `benchmarks/tflite_latency.py` does, the candidate
        scorer on one user's history and 101 candidates."""
        import numpy as np

        from zoo.pruning import PruneSetup
        from zoo.recommender import data as recommender_data
        from zoo.recommender.export import candidate_scoring_model
        from zoo.recommender.model import NextItemRetriever

        if not isinstance(model, NextItemRetriever):
            raise ValueError(f"expected a NextItemRetriever to prune, received: a "
                             f"{type(model).__name__}")
        read = recommender_data.read(args.data, item_labels=model.preprocessor.item_labels)
        length = model.backbone.max_sequence_length
        batches, _ = recommender_data.retrieval_batches(read, length, 128, args.seed)
        validation = recommender_data.evaluation_set(read, "valid")
        test = recommender_data.evaluation_set(read, "test")

        def ndcg_on(evaluation):
            return lambda candidate: recommender_data.evaluate_retriever(
                candidate, evaluation)["sampled"]["ndcg@10"]

        histories = validation.padded(length)
        candidates = np.concatenate([validation.targets[:, None], validation.negatives],
                                    axis=1).astype("int32")
        return PruneSetup(
            metric_name="sampled NDCG@10",
            validate=ndcg_on(validation),
            report=ndcg_on(test),
            validation_data=f"each user's validation item of {args.data}",
            report_data=f"each user's test item of {args.data}",
            importance_batches=lambda: batches,
            training_batches=batches,
            loss=None,
            latency_inputs={"item_ids": histories[:1], "candidate_ids": candidates[:1]},
            sample_inputs={"item_ids": histories[:8], "candidate_ids": candidates[:8]},
            export_model=candidate_scoring_model,
            distillable=False,
        )

    def format_metrics(self, metrics: dict) -> str:
        lines = []
        for which in ("valid", "test"):
            scores = metrics[which]
            if "sampled" in scores:
                lines.append(
                    f"{which}: sampled HR@10 {scores['sampled']['hr@10']:.4f}, NDCG@10 "
                    f"{scores['sampled']['ndcg@10']:.4f}; full HR@10 "
                    f"{scores['full']['hr@10']:.4f}, NDCG@10 {scores['full']['ndcg@10']:.4f}")
            else:
                lines.append(f"{which}: AUC {scores['auc']:.4f}, HR@10 {scores['hr@10']:.4f}, "
                             f"NDCG@10 {scores['ndcg@10']:.4f}")
        lines.append(f"on {metrics['users']} users")
        return "\n".join(lines)

    # -- explain and faithfulness --------------------------------------------

    explain_methods = EXPLAIN_METHODS
    best_explain_method = BEST_EXPLAIN_METHOD

    def add_explain_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--history", required=True,
                            help="the user's items, oldest first, comma-separated labels as "
                                 "in the data file (such as 12,55,301); the top "
                                 "recommendation after them is explained")

    def explain(self, model, args: argparse.Namespace) -> dict:
        from zoo.recommender import explanations

        return {"model": self.name,
                **explanations.explain_history(model, args.history, args.method)}

    def format_explanation(self, result: dict) -> str:
        from zoo.explanations import bar_line

        lines = []
        if result["unknown"]:
            lines.append(f"(items the model does not know, left out: "
                         f"{', '.join(result['unknown'])})")
        lines.append(f"top recommendation: {_described(result['recommendation'])}")
        lines.append(f"history items by {result['method']}, oldest first: " + bar_line(
            [entry["item"] for entry in result["items"]],
            [entry["score"] for entry in result["items"]]))
        for entry in sorted(result["items"], key=lambda entry: -entry["score"]):
            lines.append(f"  {_described(entry)}")
        return "\n".join(lines)

    def explanation_html(self, result: dict) -> str:
        from zoo.explanations import html_heatmap

        row = {"heading": f"history, oldest first; top recommendation: "
                          f"{_described(result['recommendation'])}",
               "tokens": [entry.get("title") or entry["item"] for entry in result["items"]],
               "scores": [entry["score"] for entry in result["items"]]}
        return html_heatmap(f"{self.name}: history items by {result['method']}, for the top "
                            "recommendation's score (red for, blue against)", [row])

    def add_faithfulness_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--users", type=int, default=300,
                            help="validation users sampled (seed 0) among those with more "
                                 "than --top-k history items (default: %(default)s)")
        parser.add_argument("--top-k", type=int, default=TOP_K,
                            help="history items removed per user (default: %(default)s)")

    def faithfulness(self, model, data: Path, args: argparse.Namespace) -> dict:
        from zoo import training
        from zoo.explanations import Progress
        from zoo.recommender import data as recommender_data
        from zoo.recommender import explanations

        training.check_option_ranges(args, positive=("users", "top_k"))
        if not hasattr(model, "score_all"):
            raise ValueError("expected a retriever (a NextItemRetriever), received: a "
                             f"{type(model).__name__}")
        read = recommender_data.read(data, item_labels=model.preprocessor.item_labels)
        split = read.split
        # --limit: the first N validation users, among whom --users are sampled.
        histories, items, eligible = explanations.sample_users(
            split.valid_history[:args.limit], split.valid_target[:args.limit],
            model.backbone.max_sequence_length, args.top_k, args.users)
        progress = Progress(explanations.progress_steps(args.methods))
        report = explanations.measure(model, histories, items, args.methods, args.top_k,
                                      args.random_seeds, args.sanity_examples, progress.step)
        return {**report, "eligible_users": eligible}

    def format_faithfulness(self, report: dict) -> str:
        import math

        k = report["k"]
        lines = [f"{report['examples']} validation users (of {report['eligible_users']} with "
                 f"more than {k} history items); each method explains the held-out item's "
                 f"score (mean {report['baseline']['score']:.3f}, mean rank "
                 f"{report['baseline']['rank']:.1f})"]
        lines += ["", f"top {k} history items deleted: the held-out item's score drop (95 % "
                      "bootstrap interval), as a multiple of random's, and its rank rise",
                  f"  {'method':<22} {'score drop, top removed':<29} {'x random':>8} "
                  f"{'rank rise':>10} {'drop, top kept':>15} {'sanity rho':>10}"]
        rows = [(name, values, values.get("sanity_spearman"))
                for name, values in report["methods"].items()]
        rows.append((f"random ({report['random_seeds']} seeds)", report["random"], None))
        for name, values, sanity in rows:
            low, high = values["interval"]
            ratio = values.get("random_ratio")
            shown_ratio = "" if ratio is None or math.isnan(ratio) else f"{ratio:8.2f}"
            shown_sanity = "" if sanity is None else f"{sanity:10.2f}"
            lines.append(
                f"  {name:<22} {values['comprehensiveness']:7.3f} [{low:7.3f}, {high:7.3f}]"
                f"    {shown_ratio:>8} {values['rank_increase']:10.1f} "
                f"{values['sufficiency']:15.3f} {shown_sanity:>10}")
        lines += ["", "sanity rho: Spearman correlation with the explanations of the model "
                      "with every layer's weights shuffled, top down (below 0.5: the method "
                      "sees the weights)"]
        return "\n".join(lines)



def _described(entry: dict) -> str:
    """`item score` (and the title, where the data has one) of an explained item."""
    title = f"  {entry['title']}" if entry.get("title") else ""
    return f"{entry['item']} {entry['score']:.4f}{title}"


def recommend(model, history: str, top: int = 10, exclude_seen: bool = True,
              candidates: Optional[str] = None, index=None) -> dict:
    """A history of raw labels to the top items (or the given candidates' scores).

    Args:
        model: a `NextItemRetriever` or a `CandidateScorer` with a preprocessor.
        history: the user's item labels, oldest first, comma- or space-separated.
        top: items returned.
        exclude_seen: leave out every item of the history (however long).
        candidates: a candidate scorer's items to score, comma-separated.
        index: a retriever's `RetrievalIndex` or index file to take the items
            from (`None`: score every item).

    Returns:
        `{"history": [labels], "unknown": [labels the model lacks], "items":
        [{"item", "score", "title"?}]}`, best first.
    """
    import numpy as np

    preprocessor = model.preprocessor
    labels = [label for label in history.replace(",", " ").split()]
    if not labels:
        raise ValueError("expected --history with at least one item, received: none")
    if top <= 0:
        raise ValueError(f"expected --top > 0, received: {top}")
    ids = preprocessor.item_ids(labels)
    unknown = [label for label, i in zip(labels, ids) if i == 0]
    histories = np.asarray(preprocessor([" ".join(labels)])["item_ids"])
    if hasattr(model, "recommend"):
        if candidates is not None:
            raise ValueError("expected --candidates with a candidate scorer, received: a "
                             "retriever (it ranks the whole catalogue)")
        known = ids[ids > 0].astype(np.int32)
        # The whole history (the model encodes its last L items and leaves
        # out all of them); the preprocessor's row when no item is known.
        full = known[None] if len(known) else histories
        try:
            items, scores = model.recommend(full, top_k=min(top, model.num_items),
                                            exclude_seen=exclude_seen, index=index)
        except ImportError as error:
            raise ValueError(str(error)) from None
        items, scores = items[0], scores[0]
    else:
        if candidates is None:
            raise ValueError("expected --candidates (comma-separated items) with a candidate "
                             "scorer, received: none")
        if model.num_genres or model.user_feature_sizes:
            raise ValueError("expected a scorer without side features for predict, received: "
                             "one that needs genres or user features; use evaluate")
        names = candidates.replace(",", " ").split()
        candidate_ids = preprocessor.item_ids(names)
        missing = [name for name, i in zip(names, candidate_ids) if i == 0]
        if missing:
            raise ValueError(f"expected --candidates the model knows, received: {missing[0]!r}")
        logits = model.score({"item_ids": histories,
                              "candidate_ids": candidate_ids[None].astype(np.int32)})[0]
        order = np.argsort(-logits, kind="stable")[:top]
        items, scores = candidate_ids[order], logits[order]
    entries = []
    for item, score in zip(items, scores):
        entry = {"item": preprocessor.labels_of([item])[0], "score": round(float(score), 4)}
        title = preprocessor.title_of(int(item))
        if title:
            entry["title"] = title
        entries.append(entry)
    return {"history": labels, "unknown": unknown, "items": entries}


registry.register(RecommenderRecipe())
