"""`python -m zoo train attention-transformer`: the steps of the recipe, in order.

Options are checked first (`check_options`); then `run` reads the splits,
learns the vocabulary, pre-trains (`pretraining.py`), fine-tunes once per
seed (`fine_tuning.py`), chooses or averages, scores with `data.score`, and
writes the outputs the recipe's docstring lists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras

from kerasattn._files import write_atomically
from zoo import console
from zoo import training
from zoo.attention_transformer import data as recipe_data
from zoo.attention_transformer import fine_tuning
from zoo.attention_transformer import pretraining
from zoo.attention_transformer.defaults import derive_fine_tuning
from zoo.attention_transformer.plots import attention_probe
from zoo.attention_transformer.plots import plot_attention
from zoo.attention_transformer.defaults import EXPLANATION_PICTURES
from zoo.files import write_json

VOCABULARY_FILE = "vocabulary.txt"
FINE_TUNING_OPTIONS_FILE = "options.json"
WALL_TIME_FILE = "wall_time.json"
HEATMAP_SENTENCE = 0  # the dev sentence shown in attention_heatmap.png
PROBE_SENTENCES = 3  # validation sentences whose attention maps TensorBoard shows


def check_options(args: argparse.Namespace) -> None:
    """Raises a one-line `ValueError` naming the flag of a bad option or the missing file."""
    training.check_option_ranges(
        args,
        positive=("vocabulary_size", "sequence_length", "layers", "hidden_dim", "heads",
                  "intermediate_dim", "epochs", "batch_size", "patience"),
        non_negative=("full_weight_length", "pretrain_epochs", "attention_window",
                      "validation_sentences", "warmup_steps", "weight_decay"),
    )
    if not 0 < args.mask_rate < 1:
        raise ValueError(f"expected --mask-rate in (0, 1), received: {args.mask_rate}")
    training.check_option_ranges(
        args,
        positive=("learning_rate", "pretrain_learning_rate", "pooling_units"),
        rates=("dropout", "attention_dropout", "token_dropout", "head_dropout",
               "label_smoothing"),
    )
    data = Path(args.data)
    if not data.is_dir():
        raise ValueError(
            f"{data}: expected a data folder with train.tsv and dev.tsv, received: no such folder"
        )
    for name in ("train.tsv", "dev.tsv"):
        if not (data / name).is_file():
            raise ValueError(f"{data / name}: expected a file, received: no such file")


def _fine_tune_seeds(args: argparse.Namespace) -> list[int]:
    return list(args.fine_tune_seeds) if args.fine_tune_seeds else [args.seed]


def _label_names(args: argparse.Namespace, found: list[str]) -> list[str]:
    if not args.label_names:
        return found
    names = [name.strip() for name in args.label_names.split(",")]
    if len(names) != len(found):
        raise ValueError(
            f"expected {len(found)} --label-names (labels {found} in train.tsv), "
            f"received: {args.label_names!r}"
        )
    return names


def _vocabulary(args: argparse.Namespace, out: Path, texts) -> list[str]:
    from kerasattn import text as ktext

    if args.vocabulary:
        return ktext.load_vocabulary(args.vocabulary)
    if (out / VOCABULARY_FILE).is_file():
        return ktext.load_vocabulary(out / VOCABULARY_FILE)  # a resumed run
    vocabulary = ktext.learn_wordpiece_vocabulary(texts, args.vocabulary_size)
    ktext.save_vocabulary(vocabulary, out / VOCABULARY_FILE)
    return vocabulary


def run(args: argparse.Namespace, model_name: str) -> dict:
    """Runs the recipe with the options of `AttentionTransformerRecipe.add_train_arguments`.

    Returns:
        The metrics written to `OUT/metrics.json`.

    Raises:
        ValueError: for bad options or data, with a one-line message.
    """
    check_options(args)
    args.verbose = console.fit_verbosity(args.verbose)
    import tensorflow as tf

    from kerasattn.callbacks import AttentionMapCallback
    from zoo.attention_transformer.model import AttentionTransformerBackbone
    from zoo.attention_transformer.model import AttentionTransformerClassifier
    from zoo.text_preprocessing import TextClassifierPreprocessor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = training.WallClock(out / WALL_TIME_FILE)
    splits = recipe_data.read_splits(args.data, args.validation_sentences, args.validation_seed)
    label_names = _label_names(args, splits.train.label_names)
    keras.utils.set_random_seed(args.seed)
    vocabulary = _vocabulary(args, out, splits.train.texts)
    preprocessor = TextClassifierPreprocessor(vocabulary, sequence_length=args.sequence_length)
    lengths = recipe_data.token_lengths(splits.train.texts, preprocessor)
    derived = derive_fine_tuning(
        args, splits.sentences, splits.held_out, len(splits.train.texts), int(lengths.sum()),
        label_names, recipe_data.steps_per_epoch(splits.train.texts, preprocessor,
                                                 args.batch_size),
    )
    print(derived.summary(), flush=True)
    architecture = dict(
        vocabulary_size=len(vocabulary),
        num_layers=args.layers,
        hidden_dim=args.hidden_dim,
        num_heads=args.heads,
        intermediate_dim=args.intermediate_dim,
        max_sequence_length=args.sequence_length,
        norm=args.norm,
        cross_layer_fusion=args.fusion,
        pooling_units=args.pooling_units,
        position_encoding=args.position_encoding,
        attention_window=args.attention_window or None,
    )
    strategy = training.distribution_strategy(args.strategy)
    policy = training.dtype_policy(args.precision)

    pretrained = None
    if args.pretrain_epochs:
        options = pretraining.pretraining_options(
            architecture, vocabulary, splits.train.texts, args.pretrain_epochs,
            args.pretrain_learning_rate, args.mask_rate, args.warmup_steps, args.batch_size,
            args.seed, policy,
        )
        pretrained = pretraining.pretrain(out, options, vocabulary, splits.train.texts,
                                          strategy, args.verbose)
        clock.save()
    dropout = dict(dropout=args.dropout, attention_dropout=args.attention_dropout,
                   token_dropout=args.token_dropout)

    def build_classifier() -> AttentionTransformerClassifier:
        if pretrained:
            backbone = AttentionTransformerBackbone.from_preset(
                out / pretraining.PRETRAINED_BACKBONE, **dropout, dtype=policy
            )
        else:
            backbone = AttentionTransformerBackbone(**dropout, **architecture, dtype=policy)
        return AttentionTransformerClassifier(
            backbone, num_classes=len(label_names), preprocessor=preprocessor,
            dropout=args.head_dropout, label_names=label_names,
        )

    options = fine_tuning.FineTuningOptions(
        epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing, full_weight_length=args.full_weight_length,
        patience=args.patience, verbose=args.verbose, precision=policy,
        class_weight=args.class_weight,
    )
    runs_dir = out / fine_tuning.RUNS_DIR
    runs_dir.mkdir(exist_ok=True)
    training.check_recorded_options(runs_dir / FINE_TUNING_OPTIONS_FILE, {
        **{key: value for key, value in options._asdict().items() if key != "verbose"},
        **dropout, "head_dropout": args.head_dropout, "init_seed": args.seed,
        "architecture": architecture, "validation": splits.validation_source,
        "pretraining": None if pretrained is None else pretrained["options"],
    })
    probe_features, probe_tokens = attention_probe(
        preprocessor, splits.validation.texts[:PROBE_SENTENCES]
    )
    seeds = _fine_tune_seeds(args)
    results, runs, models = [], [], []
    for seed in seeds:
        log_dir = str(out / "logs" / f"seed-{seed}")
        model, seed_run = fine_tuning.fine_tune(
            seed, runs_dir / f"seed-{seed}", build_classifier, preprocessor, splits.train,
            splits.validation, options, strategy, init_seed=args.seed, wall_clock=clock,
            callbacks=[
                keras.callbacks.TensorBoard(log_dir),
                AttentionMapCallback(probe_features, log_dir, every_n_epochs=1, max_examples=2,
                                     probe_tokens=probe_tokens,
                                     explanation_methods=EXPLANATION_PICTURES),
            ],
        )
        runs.append(seed_run)
        models.append(model)
        results.append({
            "seed": seed,
            "validation_accuracy": recipe_data.score(model, splits.validation)["accuracy"],
            "dev_accuracy": recipe_data.score(model, splits.dev)["accuracy"],
            "best_epoch": seed_run.record.best_epoch,
            "epochs_run": len(seed_run.record.epochs),
            "epoch_seconds": seed_run.record.epoch_seconds,
            "history": seed_run.record.history,
        })

    averaged = args.average == "weights" and len(seeds) > 1
    if averaged:
        model = models[0]
        fine_tuning.average(model, runs)
        shipped = f"the element-wise mean of the best weights of seeds {seeds}"
        reference = 0
    else:
        reference = max(range(len(seeds)), key=lambda i: results[i]["validation_accuracy"])
        model = models[reference]
        shipped = f"seed {seeds[reference]}, the best on validation"
    model = training.served_model(model)
    validation = {"source": splits.validation_source, **recipe_data.score(model, splits.validation)}
    dev = recipe_data.score(model, splits.dev)

    write_atomically(out / "model.keras", model.save, suffix=".keras")
    metric_data = ("SST-2 dev" if not args.validation_sentences
                   else f"{args.validation_sentences} sentences held out from train.tsv")
    model.save_to_preset(
        out / "preset",
        description=f"{model_name} trained by the recipe on {args.data}; {shipped}",
        metrics={"name": "accuracy", "value": validation["accuracy"], "data": metric_data,
                 "dev_accuracy": dev["accuracy"]},
    )
    history = runs[reference].record.history
    training.plot_training_curves(history, out / "training_curves.png",
                                  validation_name="validation")
    plot_attention(model, splits.dev.texts[HEATMAP_SENTENCE], out / "attention_heatmap.png")
    clock.save()
    metrics = {
        "model": model_name,
        "options": {key: value for key, value in vars(args).items()
                    if key not in ("command", "model_name", "verbose")},
        "validation": validation,
        "dev": dev,
        "validation_accuracy": validation["accuracy"],
        "dev_accuracy": dev["accuracy"],
        "fine_tuning": {"seeds": results, "average": args.average, "shipped": shipped},
        "best_epoch": None if averaged else results[reference]["best_epoch"],
        "epochs_run": results[reference]["epochs_run"],
        "steps_per_epoch": derived.data["steps_per_epoch"],
        "epoch_seconds": results[reference]["epoch_seconds"],
        "history": history,
        "wall_seconds": clock.seconds,
        "runs": clock.runs,
        "parameters": int(model.count_params()),
        "devices": strategy.num_replicas_in_sync,
        "precision": policy,
        "derived": derived.record(),
        "pretraining": pretrained,
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
    }
    write_json(out / "metrics.json", metrics)
    return metrics
