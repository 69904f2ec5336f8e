"""`python -m zoo train sequence-tagger`: the steps of the recipe, in order.

Options are checked first (`check_options`); then `run` reads the splits,
learns the vocabularies (or reuses the run's), builds and trains the tagger
with early stopping on validation F1, scores validation and test, and
writes the outputs the recipe's docstring lists.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import keras

from kerasattn._files import write_atomically
from zoo import console
from zoo import distribute
from zoo import training
from zoo.sequence_tagger.defaults import derive_training
from zoo.files import read_json
from zoo.files import write_json

RUN_DIR = "run"
OPTIONS_FILE = "options.json"
VOCABULARIES_FILE = "vocabularies.json"
WALL_TIME_FILE = "wall_time.json"
PROBE_SENTENCES = 3  # validation sentences whose attention maps TensorBoard shows
HEATMAP_LENGTHS = (12, 24)  # attention_heatmap.png: the first validation sentence this long


def check_options(args: argparse.Namespace) -> None:
    """Raises a one-line `ValueError` naming the flag of a bad option or the missing file."""
    training.check_option_ranges(
        args,
        positive=("word_dim", "max_word_length", "hidden_dim", "heads", "intermediate_dim",
                  "epochs", "batch_size", "patience", "learning_rate"),
        non_negative=("character_filters", "lstm_units", "layers", "context_window",
                      "warmup_steps", "weight_decay"),
        rates=("dropout", "block_dropout", "attention_dropout", "word_dropout"),
    )
    check_width(args)
    data = Path(args.data)
    if not data.is_dir():
        raise ValueError(f"{data}: expected a data folder with train.txt and valid.txt, "
                         "received: no such folder")
    for name in ("train.txt", "valid.txt"):
        if not (data / name).is_file():
            raise ValueError(f"{data / name}: expected a file, received: no such file")


def check_width(args: argparse.Namespace) -> None:
    """`--hidden-dim` divisible by `--heads` (once the width is known: given or derived)."""
    if args.layers and args.hidden_dim is not None and args.hidden_dim % args.heads:
        raise ValueError(f"expected --hidden-dim divisible by --heads, received: "
                         f"{args.hidden_dim} and {args.heads}")


def _vocabularies(out: Path, sentences) -> tuple[list[str], list[str]]:
    """The training sentences' vocabularies, kept in `out` so that a resumed run reuses them."""
    from zoo.sequence_tagger.preprocessor import learn_vocabularies

    path = out / VOCABULARIES_FILE
    if path.is_file():
        saved = read_json(path, ("words", "characters"))
        return saved["words"], saved["characters"]
    words, characters = learn_vocabularies(sentences.tokens)
    write_json(path, {"words": words, "characters": characters})
    return words, characters


def _heatmap_sentence(sentences) -> str:
    """The first sentence with an entity and `HEATMAP_LENGTHS` tokens (else the longest)."""
    low, high = HEATMAP_LENGTHS
    for tokens, tags in zip(sentences.tokens, sentences.tags):
        if low <= len(tokens) <= high and any(tag != "O" for tag in tags):
            return " ".join(tokens)
    return " ".join(max(sentences.tokens, key=len))


def run(args: argparse.Namespace, model_name: str) -> dict:
    """Runs the recipe with the options of `SequenceTaggerRecipe.add_train_arguments`.

    Args:
        args: the parsed options.
        model_name: the recipe's name, recorded in the preset and the metrics.

    Returns:
        The metrics written to `OUT/metrics.json`.
    """
    check_options(args)
    from kerasattn.callbacks import AttentionMapCallback
    from zoo.sequence_tagger import data as tagger_data
    from zoo.sequence_tagger.model import SequenceTagger
    from zoo.sequence_tagger.model import SequenceTaggerBackbone
    from zoo.sequence_tagger.plots import plot_attention
    from zoo.sequence_tagger.preprocessor import SequenceTaggerPreprocessor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = training.WallClock(out / WALL_TIME_FILE)
    splits = tagger_data.read_splits(args.data, args.token_column, args.tag_column,
                                     args.scheme, args.tag_scheme)
    tag_names = splits.train.tag_names
    words, characters = _vocabularies(out, splits.train)
    policy = training.dtype_policy(args.precision)
    preprocessor = SequenceTaggerPreprocessor(words, characters, tag_names,
                                              max_word_length=args.max_word_length)
    keras.utils.set_random_seed(args.seed)
    batches, steps = tagger_data.training_batches(splits.train, preprocessor, args.batch_size,
                                                  args.seed)
    derived = derive_training(args, splits.train.tokens, splits.train.tags,
                              splits.train.entity_types, steps)
    print(derived.summary(), flush=True)
    check_width(args)
    architecture = dict(
        vocabulary_size=len(words), num_characters=len(characters),
        max_word_length=args.max_word_length, word_dim=args.word_dim,
        character_filters=args.character_filters, hidden_dim=args.hidden_dim,
        lstm_units=args.lstm_units, num_layers=args.layers, num_heads=args.heads,
        intermediate_dim=args.intermediate_dim, dropout=args.dropout,
        attention_dropout=args.attention_dropout, word_dropout=args.word_dropout,
        position_encoding=args.position_encoding, context_window=args.context_window,
        block_dropout=args.block_dropout,
    )
    run_dir = out / RUN_DIR
    run_dir.mkdir(exist_ok=True)
    training.check_recorded_options(run_dir / OPTIONS_FILE, {
        "architecture": architecture, "head": args.head, "tag_scheme": args.tag_scheme,
        "tag_names": tag_names, "precision": policy, "seed": args.seed,
        **{name: getattr(args, name) for name in (
            "epochs", "batch_size", "learning_rate", "warmup_steps", "weight_decay", "patience")},
    })
    keras.utils.set_random_seed(args.seed)
    strategy = training.distribution_strategy(args.strategy)
    with strategy.scope():
        backbone = SequenceTaggerBackbone(**architecture, dtype=policy)
        model = SequenceTagger(backbone, len(tag_names), preprocessor=preprocessor,
                               head=args.head, scheme=args.tag_scheme)
        model.compile(optimizer=training.optimizer(
            args.learning_rate, steps * args.epochs, args.warmup_steps, args.weight_decay,
            clipnorm=5.0, precision=policy,
        ))
    record = training.TrainingRecord(
        run_dir / "history.json", run_dir / "best.weights.h5", monitor="val_f1", mode="max",
        patience=args.patience, wall_clock=clock,
    )
    log_dir = str(out / "logs")
    probe_texts = splits.validation.texts()[:PROBE_SENTENCES]
    probe = preprocessor(probe_texts)
    if record.finished:
        training.load_weights(model, record.best_weights_path)
    else:
        callbacks = [
            distribute.BackupAndRestore(str(run_dir / "backup")),
            tagger_data.EntityF1Callback(splits.validation),
            record,
            keras.callbacks.TensorBoard(log_dir),
        ]
        if args.layers:
            callbacks.append(AttentionMapCallback(
                probe, log_dir, every_n_epochs=1, max_examples=PROBE_SENTENCES,
                probe_tokens=[text.split() for text in probe_texts],
                # One output per token: explanations are `zoo explain`'s, per entity.
                explanation_methods=(),
            ))
        model.fit(batches, epochs=args.epochs, steps_per_epoch=steps, callbacks=callbacks,
                  verbose=console.fit_verbosity(args.verbose))
    model = training.served_model(model)
    validation = tagger_data.score(model, splits.validation)
    test = None if splits.test is None else tagger_data.score(model, splits.test)
    write_atomically(out / "model.keras", model.save, suffix=".keras")
    model.save_to_preset(
        out / "preset",
        description=f"{model_name} trained by the recipe on {Path(args.data).name} "
                    f"(train.txt), selected on valid.txt; seed {args.seed}",
        metrics={"name": "entity_f1", "value": validation["overall"]["f1"],
                 "data": f"{Path(args.data).name} valid.txt (seqeval, strict IOB2)"},
    )
    training.plot_training_curves(record.history, out / "training_curves.png",
                                  metrics=("loss", "f1"), validation_name="validation")
    if args.layers:
        plot_attention(model, _heatmap_sentence(splits.validation), out / "attention_heatmap.png")
    clock.save()
    tokens = sum(len(tokens) for tokens in splits.train.tokens)
    metrics = {
        "model": model_name,
        "options": {key: value for key, value in vars(args).items()
                    if key not in ("command", "model_name", "verbose")},
        "precision": policy,
        "derived": derived.record(),
        "tag_names": tag_names,
        "validation": validation,
        "test": test,
        "best_epoch": record.best_epoch,
        "epochs_run": len(record.epochs),
        "epoch_seconds": record.epoch_seconds,
        "training_tokens_per_second": [round(tokens / s) for s in record.epoch_seconds],
        "history": record.history,
        "parameters": model.count_params(),
        "wall_seconds": round(clock.seconds, 1),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
