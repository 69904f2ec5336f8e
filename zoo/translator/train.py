"""`python -m zoo train translator`: the steps of the recipe, in order.

Options are checked first (`check_options`); then `run` reads the splits,
learns the SentencePiece vocabulary (or reuses the run's), builds and
trains the translator with early stopping on validation BLEU, scores
validation greedy and with beam search, and writes the outputs the
recipe's docstring lists.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import keras

from kerasattn._files import write_atomically
from zoo import console
from zoo import distribute
from zoo import training
from zoo.files import write_json
from zoo.translator.defaults import derive_data
from zoo.translator.defaults import derive_training

RUN_DIR = "run"
OPTIONS_FILE = "options.json"
VOCABULARY_FILE = "sentencepiece.model"
WALL_TIME_FILE = "wall_time.json"
SPLITS = ("train", "val")
PROBE_SENTENCES = 2  # validation pairs whose attention maps TensorBoard shows


def check_options(args: argparse.Namespace) -> None:
    """Raises a one-line `ValueError` naming the flag of a bad option or the missing data."""
    training.check_option_ranges(
        args,
        positive=("vocabulary_size", "sequence_length", "encoder_layers", "decoder_layers",
                  "hidden_dim", "heads", "intermediate_dim", "epochs", "patience", "batch_size",
                  "learning_rate", "beam"),
        non_negative=("warmup_steps", "weight_decay"),
        rates=("dropout", "attention_dropout", "label_smoothing"),
    )
    if args.hidden_dim % args.heads:
        raise ValueError(f"expected --hidden-dim divisible by --heads, received: "
                         f"{args.hidden_dim} and {args.heads}")
    if not Path(args.data).is_dir():
        raise ValueError(f"{args.data}: expected a data folder with train and val pairs, "
                         "received: no such folder")


def read_splits(args: argparse.Namespace) -> dict:
    """The training and validation pairs of `--data`, by split name."""
    from zoo.translator.data import read_split

    splits = {}
    for name in SPLITS:
        pairs = read_split(args.data, name, args.source_language, args.target_language)
        if pairs is None:
            raise ValueError(
                f"{Path(args.data) / name}.{args.source_language}: expected the {name} pairs "
                f"({name}.{args.source_language} and {name}.{args.target_language}, or "
                f"{name}.tsv), received: no such file")
        splits[name] = pairs
    return splits


def _sentencepiece_model(out: Path, train, vocabulary_size: int) -> bytes:
    """The joint vocabulary of the training pairs, kept in `out` so that a resumed run reuses it."""
    from kerasattn.text import learn_sentencepiece_model

    path = out / VOCABULARY_FILE
    if path.is_file():
        return path.read_bytes()
    model = learn_sentencepiece_model(list(train.sources) + list(train.targets),
                                      vocabulary_size=vocabulary_size)

    def write(temporary: str) -> None:
        Path(temporary).write_bytes(model)

    write_atomically(path, write)
    return model


def run(args: argparse.Namespace, model_name: str) -> dict:
    """Runs the recipe with the options of `TranslatorRecipe.add_train_arguments`.

    Args:
        args: the parsed options.
        model_name: the recipe's name, recorded in the preset and the metrics.

    Returns:
        The metrics written to `OUT/metrics.json`.
    """
    check_options(args)
    from kerasattn.callbacks import AttentionMapCallback
    from zoo.translator.data import BleuCallback
    from zoo.translator.data import score
    from zoo.translator.model import Translator
    from zoo.translator.model import TranslatorBackbone
    from zoo.translator.preprocessor import TranslatorPreprocessor

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clock = training.WallClock(out / WALL_TIME_FILE)
    splits = read_splits(args)
    train, validation = splits["train"], splits["val"]
    derived = derive_data(args, train.sources, train.targets)
    keras.utils.set_random_seed(args.seed)
    preprocessor = TranslatorPreprocessor(
        _sentencepiece_model(out, train, args.vocabulary_size),
        source_sequence_length=args.sequence_length, target_sequence_length=args.sequence_length)
    steps = math.ceil(len(train.sources) / args.batch_size)
    derive_training(derived, steps)
    print(derived.summary(), flush=True)
    policy = training.dtype_policy(args.precision)
    architecture = dict(
        vocabulary_size=preprocessor.vocabulary_size, num_encoder_layers=args.encoder_layers,
        num_decoder_layers=args.decoder_layers, hidden_dim=args.hidden_dim,
        num_heads=args.heads, intermediate_dim=args.intermediate_dim, dropout=args.dropout,
        attention_dropout=args.attention_dropout, cross_attention=args.cross_attention,
    )
    run_dir = out / RUN_DIR
    run_dir.mkdir(exist_ok=True)
    training.check_recorded_options(run_dir / OPTIONS_FILE, {
        "architecture": architecture, "precision": policy, "seed": args.seed,
        **{name: getattr(args, name) for name in (
            "sequence_length", "label_smoothing", "epochs", "batch_size", "learning_rate",
            "warmup_steps", "weight_decay", "patience")},
    })
    batches = train.to_dataset(args.batch_size, shuffle=True, seed=args.seed,
                               preprocessor=preprocessor)
    validation_batches = validation.to_dataset(args.batch_size, shuffle=False,
                                               preprocessor=preprocessor)
    strategy = training.distribution_strategy(args.strategy)
    with strategy.scope():
        backbone = TranslatorBackbone(**architecture, dtype=policy)
        model = Translator(backbone, preprocessor, label_smoothing=args.label_smoothing)
        model.compile(optimizer=training.optimizer(
            args.learning_rate, steps * args.epochs, args.warmup_steps, args.weight_decay,
            precision=policy,
        ))
    record = training.TrainingRecord(
        run_dir / "history.json", run_dir / "best.weights.h5", monitor="val_bleu", mode="max",
        patience=args.patience, wall_clock=clock,
    )
    log_dir = str(out / "logs")
    if record.finished:
        training.load_weights(model, record.best_weights_path)
    else:
        callbacks = [
            distribute.BackupAndRestore(str(run_dir / "backup")),
            BleuCallback(validation, batch_size=args.batch_size),
            record,
            keras.callbacks.TensorBoard(log_dir),
            # Self- and cross-attention maps of the first validation pairs, teacher-forced.
            AttentionMapCallback(preprocessor(validation.sources[:PROBE_SENTENCES],
                                              validation.targets[:PROBE_SENTENCES])[0],
                                 log_dir, every_n_epochs=1, max_examples=PROBE_SENTENCES,
                                 # Rollout reads one stack of self-attention, not an
                                 # encoder-decoder: maps only.
                                 explanation_methods=()),
        ]
        model.fit(batches, epochs=args.epochs, validation_data=validation_batches,
                  callbacks=callbacks, verbose=console.fit_verbosity(args.verbose))
    model = training.served_model(model)
    scores = {
        "greedy": score(model, validation, beam=1, batch_size=args.batch_size, lowercase=True),
        "beam": score(model, validation, beam=args.beam, batch_size=args.batch_size,
                      lowercase=True),
    }
    examples = [{"source": source, "reference": reference, "translation": translation}
                for source, reference, translation in zip(
                    validation.sources[:10], validation.targets[:10],
                    scores["beam"]["translations"][:10])]
    for result in scores.values():
        del result["translations"]
    write_atomically(out / "model.keras", model.save, suffix=".keras")
    data_name = Path(args.data).name
    model.save_to_preset(
        out / "preset",
        description=f"{model_name} trained by the recipe on {data_name} (train), selected on "
                    f"val BLEU; seed {args.seed}",
        metrics={"name": "bleu", "value": scores["beam"]["bleu"],
                 "data": f"{data_name} val (sacreBLEU, cased, 13a; beam {args.beam})"},
    )
    training.plot_training_curves(record.history, out / "training_curves.png",
                                  metrics=("loss", "bleu"), validation_name="validation")
    clock.save()
    target_tokens = int(preprocessor.target_lengths(train.targets).sum()) + len(train.targets)
    metrics = {
        "model": model_name,
        "options": {key: value for key, value in vars(args).items()
                    if key not in ("command", "model_name", "verbose")},
        "precision": policy,
        "derived": derived.record(),
        "validation": scores,
        "examples": examples,
        "best_epoch": record.best_epoch,
        "epochs_run": len(record.epochs),
        "epoch_seconds": record.epoch_seconds,
        "training_target_tokens_per_second": [round(target_tokens / s)
                                              for s in record.epoch_seconds],
        "history": record.history,
        "parameters": model.count_params(),
        "wall_seconds": round(clock.seconds, 1),
    }
    write_json(out / "metrics.json", metrics)
    return metrics
