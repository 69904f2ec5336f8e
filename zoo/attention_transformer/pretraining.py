"""Masked-token pre-training of the backbone on the training texts."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import keras

from zoo import distribute
from zoo import training
from zoo.attention_transformer import data as recipe_data
from zoo.attention_transformer.model import AttentionTransformerBackbone
from zoo.attention_transformer.model import AttentionTransformerMaskedLM
from zoo.files import read_json
from zoo.files import write_json
from zoo.text_preprocessing import MaskedTokenPreprocessor

PRETRAINED_BACKBONE = "pretrained_backbone"  # a preset folder (the masked-token task)
RECORD_FILE = "pretraining.json"
BACKUP_DIR = "pretraining_backup"
HISTORY_FILE = "pretraining_history.json"  # per epoch, kept across an interruption
# Lighter dropout than fine-tuning: the masking is the noise here.
PRETRAINING_DROPOUT = {"dropout": 0.1, "attention_dropout": 0.1, "token_dropout": 0.0}
PRETRAINING_WEIGHT_DECAY = 0.01


def digest(lines: Sequence[str]) -> str:
    """A short SHA-256 of a list of strings (the texts, the vocabulary)."""
    hasher = hashlib.sha256()
    for line in lines:
        hasher.update(line.encode("utf-8") + b"\n")
    return hasher.hexdigest()[:16]


def pretraining_options(architecture: dict, vocabulary: Sequence[str], texts: Sequence[str],
                        epochs: int, learning_rate: float, mask_rate: float,
                        warmup_steps: int, batch_size: int, seed: int,
                        precision: str = "float32") -> dict:
    """Every option that shapes the pre-trained backbone, as `pretraining.json` records them."""
    return {
        "epochs": epochs,
        "learning_rate": learning_rate,
        "mask_rate": mask_rate,
        "warmup_steps": warmup_steps,
        "batch_size": batch_size,
        "seed": seed,
        "precision": precision,
        "weight_decay": PRETRAINING_WEIGHT_DECAY,
        "architecture": {**architecture, **PRETRAINING_DROPOUT},
        "vocabulary_sha256": digest(vocabulary),
        "texts": len(texts),
        "texts_sha256": digest(texts),
    }


def pretrain(out: Path, options: dict, vocabulary: Sequence[str], texts: Sequence[str],
             strategy, verbose: int) -> dict:
    """Pre-trains a backbone with `MaskedTokenPreprocessor` and `AttentionTransformerMaskedLM`.

    Writes the masked-token model as a preset to `OUT/pretrained_backbone/`
    (its backbone loads into the classifier with
    `AttentionTransformerBackbone.from_preset`) and the record to
    `OUT/pretraining.json`. When both exist (a resumed run, or a backbone
    copied in to fine-tune again) they are reused if the record's options
    are `options`; an interrupted pre-training resumes from its own
    `BackupAndRestore` folder.

    Args:
        out: the recipe's output folder.
        options: `pretraining_options(...)`.
        vocabulary: the WordPiece vocabulary (holding `[MASK]`).
        texts: the training texts.
        strategy: the `tf.distribute` strategy.
        verbose: Keras `fit` verbosity.

    Returns:
        The record: `{"options", "masked_token_loss", "masked_token_accuracy",
        "epoch_seconds"}`.

    Raises:
        ValueError: if a pre-training with other options is in `out`, or the
            vocabulary has no `[MASK]`.
    """
    record_path = out / RECORD_FILE
    folder = out / PRETRAINED_BACKBONE
    if record_path.is_file() and folder.is_dir():
        record = read_json(record_path, ("options",))
        if record["options"] != options:
            differing = sorted(
                key for key in set(options) | set(record["options"])
                if options.get(key) != record["options"].get(key)
            )
            raise ValueError(
                f"{record_path}: expected a pre-training with the options given, received: one "
                f"that differs in {', '.join(differing)}; use another --out folder"
            )
        return record
    architecture = options["architecture"]
    keras.utils.set_random_seed(options["seed"])
    preprocessor = MaskedTokenPreprocessor(
        list(vocabulary), mask_rate=options["mask_rate"],
        sequence_length=architecture["max_sequence_length"],
    )
    dataset, steps = recipe_data.training_batches(
        texts, None, preprocessor, options["batch_size"], options["seed"]
    )
    with strategy.scope():
        backbone = AttentionTransformerBackbone(**architecture, dtype=options["precision"])
        # The pooling is not used by masked-token prediction.
        backbone.get_layer("attention_pooling").trainable = False
        masked_lm = AttentionTransformerMaskedLM(backbone, preprocessor=preprocessor)
        masked_lm.compile(
            optimizer=training.optimizer(
                options["learning_rate"], steps * options["epochs"], options["warmup_steps"],
                PRETRAINING_WEIGHT_DECAY, precision=options["precision"],
            )
        )
    epochs = training.TrainingRecord(out / HISTORY_FILE)
    masked_lm.fit(
        dataset,
        epochs=options["epochs"],
        steps_per_epoch=steps,
        callbacks=[distribute.BackupAndRestore(str(out / BACKUP_DIR)), epochs],
        verbose=verbose,
    )
    history = epochs.history
    backbone.get_layer("attention_pooling").trainable = True
    masked_lm.save_to_preset(folder, description="masked-token pre-training on the training texts")
    record = {
        "options": options,
        "masked_token_loss": [round(float(v), 4) for v in history["loss"]],
        "masked_token_accuracy": [round(float(v), 4) for v in history["accuracy"]],
        "epoch_seconds": epochs.epoch_seconds,
    }
    write_json(record_path, record)
    return record
