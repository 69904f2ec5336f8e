"""`python -m zoo train recommender`: the steps of the recipe, in order.

Options are checked first (`check_options`); then `run` reads and splits the
log, builds the task (`--task retrieval`: `NextItemRetriever`; `--task
scorer`: `CandidateScorer`), trains it with validation ranking metrics at
every epoch's end and early stopping on them, scores validation and, once at
the end, test, and writes the outputs the recipe's docstring lists.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import keras
import numpy as np

from kerasattn._files import write_atomically
from zoo import console
from zoo import distribute
from zoo import training
from zoo.recommender import defaults
from zoo.files import save_figure
from zoo.files import write_json

RUN_DIR = "run"
OPTIONS_FILE = "options.json"
WALL_TIME_FILE = "wall_time.json"
PROBE_USERS = 3  # validation users whose attention maps TensorBoard shows
HEATMAP_ITEMS = 15  # items of the history drawn in attention_heatmap.png
MONITORS = {"retrieval": "val_sampled_ndcg_at_10", "scorer": "val_auc"}


def check_options(args: argparse.Namespace) -> None:
    """Raises a one-line `ValueError` naming the flag of a bad option or the missing data."""
    training.check_option_ranges(
        args,
        positive=("max_length", "hidden_dim", "layers", "heads", "epochs", "batch_size",
                  "patience", "num_negatives", "eval_batch_size", "intermediate_dim",
                  "learning_rate"),
        non_negative=("warmup_steps", "weight_decay"),
        rates=("dropout", "attention_dropout"),
    )
    if args.hidden_dim % args.heads:
        raise ValueError(f"expected --hidden-dim divisible by --heads, received: "
                         f"{args.hidden_dim} and {args.heads}")
    training.check_option_ranges(args, positive=("min_count",))
    data = Path(args.data)
    if not data.exists():
        raise ValueError(f"{data}: expected a SASRec-format file or a MovieLens folder, "
                         "received: no such file or folder")


def _probe(evaluation, max_length: int, count: int):
    """The first `count` validation users with the longest histories (for attention maps)."""
    lengths = np.array([len(history) for history in evaluation.histories])
    users = np.argsort(-np.minimum(lengths, max_length), kind="stable")[:count]
    return evaluation.padded(max_length)[users], users


def _heatmap_history(evaluation, max_length: int) -> np.ndarray:
    """A validation history of about `HEATMAP_ITEMS` items (readable labels), left-padded."""
    lengths = np.minimum([len(history) for history in evaluation.histories], max_length)
    user = int(np.argmin(np.abs(lengths - min(HEATMAP_ITEMS, max_length))))
    return evaluation.padded(max_length)[user]


def plot_attention(model, history: np.ndarray, labels, path: str | os.PathLike) -> None:
    """The last block's causal attention over one user's history, as a PNG.

    Args:
        model: a task on a `SequentialRecommenderBackbone`.
        history: int `(L,)`, the left-padded history.
        labels: the item label (or title) of each real position.
        path: the PNG file, written atomically.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    scores = np.asarray(model.backbone({"item_ids": history[None].astype(np.int32)},
                                       training=False)["attention_scores"], "float32")[0]
    real = int((history > 0).sum())
    values = scores.mean(axis=0)[-real:, -real:]
    size = max(3.5, 0.28 * real)
    figure, axes = pyplot.subplots(figsize=(size + 1.0, size + 1.0))
    image = axes.imshow(np.ma.masked_where(np.triu(np.ones_like(values), 1) > 0, values),
                        cmap="viridis", vmin=0)
    names = [str(label)[:28] for label in labels]
    axes.set_xticks(range(real), names, rotation=90, fontsize=6)
    axes.set_yticks(range(real), names, fontsize=6)
    axes.set_xlabel("attended item (earlier)")
    axes.set_ylabel("position (each row predicts the next item)")
    axes.set_title("last block's causal self-attention over a user's history", fontsize=9)
    figure.colorbar(image, ax=axes, fraction=0.04)
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)


def _display_labels(preprocessor, ids) -> list[str]:
    labels = preprocessor.labels_of(ids)
    return [preprocessor.title_of(i) or label for i, label in zip(ids, labels)]


def run(args: argparse.Namespace, model_name: str) -> dict:
    """Runs the recipe with the options of `RecommenderRecipe.add_train_arguments`.

    Args:
        args: the parsed options, `--num-negatives` resolved (the recipe sets
            its per-`--task` default).
        model_name: the recipe's name, recorded in the preset and the metrics.

    Returns:
        The metrics written to `OUT/metrics.json`.
    """
    check_options(args)
    from kerasattn.callbacks import AttentionMapCallback
    from zoo.recommender import data as recommender_data
    from zoo.recommender.model import CandidateScorer
    from zoo.recommender.model import NextItemRetriever
    from zoo.recommender.model import SequentialRecommenderBackbone
    from zoo.recommender.preprocessor import RecommenderPreprocessor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = training.WallClock(out / WALL_TIME_FILE)
    data = recommender_data.read(args.data, min_count=args.min_count)
    derived = defaults.derive_architecture(
        args, data.interactions.num_users, data.num_items, data.interactions.num_interactions,
        [len(sequence) for sequence in data.split.train],
    )
    keras.utils.set_random_seed(args.seed)  # the batches' shuffle takes the global seed too
    if args.task == "retrieval":
        batches, steps = recommender_data.retrieval_batches(
            data, args.max_length, args.batch_size, args.seed, args.sort_by_length)
    else:
        steps = recommender_data.scorer_steps(data, args.batch_size)
    defaults.derive_budget(derived, steps)
    print(derived.summary(), flush=True)
    side_features = args.side_features and data.side is not None
    policy = training.dtype_policy(args.precision)
    architecture = dict(
        num_items=data.num_items, max_sequence_length=args.max_length,
        hidden_dim=args.hidden_dim, num_layers=args.layers, num_heads=args.heads,
        intermediate_dim=args.intermediate_dim, dropout=args.dropout,
        attention_dropout=args.attention_dropout,
    )
    run_dir = out / RUN_DIR
    run_dir.mkdir(exist_ok=True)
    training.check_recorded_options(run_dir / OPTIONS_FILE, {
        "architecture": architecture, "task": args.task, "loss": args.loss,
        "side_features": side_features, "precision": policy, "seed": args.seed,
        "data": str(Path(args.data).resolve()), "interactions": data.interactions.num_interactions,
        **{name: getattr(args, name) for name in (
            "epochs", "batch_size", "learning_rate", "warmup_steps", "weight_decay", "patience",
            "num_negatives", "negative_sampling", "sort_by_length")},
    })
    keras.utils.set_random_seed(args.seed)
    preprocessor = RecommenderPreprocessor(data.interactions.item_ids,
                                           sequence_length=args.max_length, titles=data.titles)
    validation = recommender_data.evaluation_set(data, "valid")
    strategy = training.distribution_strategy(args.strategy)
    with strategy.scope():
        backbone = SequentialRecommenderBackbone(**architecture, dtype=policy)
        if args.task == "retrieval":
            item_counts = data.item_counts() if args.negative_sampling == "popularity" else None
            model = NextItemRetriever(backbone, preprocessor, loss=args.loss,
                                      num_negatives=args.num_negatives,
                                      item_counts=item_counts, seed=args.seed)
        else:
            model = CandidateScorer(
                backbone, preprocessor,
                num_genres=data.genres.shape[1] if side_features else 0,
                user_feature_sizes=data.user_feature_sizes if side_features else (),
                dropout=args.dropout,
            )
    if args.task == "scorer":
        batches, steps = recommender_data.scorer_batches(model, data, args.batch_size,
                                                         args.num_negatives, args.seed)
    with strategy.scope():
        model.compile(optimizer=training.optimizer(
            args.learning_rate, steps * args.epochs, args.warmup_steps, args.weight_decay,
            precision=policy,
        ))
    monitor = MONITORS[args.task]
    record = training.TrainingRecord(
        run_dir / "history.json", run_dir / "best.weights.h5", monitor=monitor, mode="max",
        patience=args.patience, wall_clock=clock,
    )
    log_dir = str(out / "logs")
    probe, probe_users = _probe(validation, args.max_length, PROBE_USERS)
    if record.finished:
        training.load_weights(model, record.best_weights_path)
    else:
        callbacks = [
            distribute.BackupAndRestore(str(run_dir / "backup")),
            recommender_data.RankingCallback(data, validation, args.eval_batch_size),
            record,
            keras.callbacks.TensorBoard(log_dir),
            AttentionMapCallback(
                {"item_ids": probe}, log_dir, every_n_epochs=1, max_examples=PROBE_USERS,
                probe_tokens=[[label or "" for label in preprocessor.labels_of(row)]
                              for row in probe],
                # One score per position: explanations are `zoo explain`'s, per position.
                explanation_methods=(),
            ) if args.task == "retrieval" else None,
        ]
        model.fit(batches, epochs=args.epochs, steps_per_epoch=steps,
                  callbacks=[callback for callback in callbacks if callback is not None],
                  verbose=console.fit_verbosity(args.verbose))
    model = training.served_model(model)
    test = recommender_data.evaluation_set(data, "test")
    if args.task == "retrieval":
        scores = {
            "valid": recommender_data.evaluate_retriever(model, validation,
                                                         args.eval_batch_size),
            "test": recommender_data.evaluate_retriever(model, test, args.eval_batch_size),
        }
        headline = {"name": "hr@10", "value": scores["valid"]["sampled"]["hr@10"],
                    "data": f"{Path(args.data).name}, validation item, 100 sampled negatives"}
        curves = ("loss", "sampled_ndcg_at_10", "full_ndcg_at_10")
    else:
        scores = {
            "valid": recommender_data.evaluate_scorer(model, data, validation,
                                                      args.eval_batch_size),
            "test": recommender_data.evaluate_scorer(model, data, test, args.eval_batch_size),
        }
        headline = {"name": "auc", "value": scores["valid"]["auc"],
                    "data": f"{Path(args.data).name}, validation item among 100 negatives"}
        curves = ("loss", "auc", "hr_at_10")
    write_atomically(out / "model.keras", model.save, suffix=".keras")
    model.save_to_preset(out / "preset",
                         description=f"{model_name} ({args.task}) trained by the recipe on "
                                     f"{Path(args.data).name}",
                         metrics=headline)
    training.plot_training_curves(record.history, out / "training_curves.png", metrics=curves)
    user = _heatmap_history(validation, args.max_length)
    real = user[user > 0]
    plot_attention(model, user, _display_labels(preprocessor, real),
                   out / "attention_heatmap.png")
    clock.save()
    metrics = {
        "model": model_name,
        "task": args.task,
        "options": {key: value for key, value in vars(args).items()
                    if key not in ("command", "model_name", "verbose")},
        "precision": policy,
        "derived": derived.record(),
        "data": {"users": data.interactions.num_users, "items": data.num_items,
                 "interactions": data.interactions.num_interactions,
                 "evaluated_users": int(len(data.split.users)),
                 "side_features": side_features},
        "valid": scores["valid"],
        "test": scores["test"],
        "best_epoch": record.best_epoch,
        "epochs_run": len(record.epochs),
        "epoch_seconds": record.epoch_seconds,
        # Training alone: the epoch less its validation scoring.
        "epoch_train_seconds": [round(epoch["seconds"] - epoch.get("val_seconds", 0.0), 1)
                                for epoch in record.epochs],
        "history": record.history,
        "parameters": model.count_params(),
        "wall_seconds": round(clock.seconds, 1),
        "attention_probe_users": [int(data.split.users[u]) for u in probe_users],
    }
    write_json(out / "metrics.json", metrics)
    return metrics
