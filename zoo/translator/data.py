"""The translator's data: reading a data folder's splits, scoring translations with sacreBLEU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import keras

from kerasattn import data as kdata


def read_split(folder: str | Path, name: str, source_language: str,
               target_language: str) -> Optional[kdata.ParallelText]:
    """The pairs of split `name`: `name.<source>` + `name.<target>`, or `name.tsv`.

    Returns:
        The pairs, or `None` if the folder holds neither layout.

    Raises:
        ValueError: naming file and line for a malformed file (see
            `kerasattn.data.read_parallel_text`).
    """
    folder = Path(folder)
    source = folder / f"{name}.{source_language}"
    target = folder / f"{name}.{target_language}"
    if source.is_file() or target.is_file():
        return kdata.read_parallel_text(source, target)
    if (folder / f"{name}.tsv").is_file():
        return kdata.read_parallel_text(folder / f"{name}.tsv")
    return None


def score(model, pairs: kdata.ParallelText, beam: int = 1, batch_size: int = 64,
          max_length: Optional[int] = None, length_penalty: float = 0.6,
          lowercase: bool = False) -> dict:
    """Translates `pairs.sources` and scores them against `pairs.targets` with sacreBLEU.

    BLEU and chrF are sacreBLEU's defaults (cased, the 13a tokenizer) on the
    raw references; `zoo evaluate translator` and the recipe's validation
    both score this way.

    Args:
        model: a `Translator` with a preprocessor.
        pairs: the sentence pairs.
        beam: 1 for greedy search, else the beam width.
        batch_size: sentences decoded together.
        max_length: the most target tokens; `None` for the model's default for
            the longest source.
        length_penalty: GNMT's `alpha` of beam search.
        lowercase: also return `"bleu_lowercase"` (output and references
            lowercased, 13a), the measure of the anchors that report
            lowercased BLEU.

    Returns:
        `{"bleu", "chrf", "sentences", "beam", "target_tokens_per_second",
        "translations"}` (the last a list of strings), plus
        `"bleu_lowercase"` with `lowercase`.
    """
    import sacrebleu

    if max_length is None:
        # One output length for every batch: the decoding loop is traced once, here, on
        # the first sentence, so that the timing below measures decoding alone.
        longest = min(int(model.preprocessor.source_lengths(pairs.sources).max(initial=1)),
                      model.preprocessor.source_sequence_length)
        max_length = model.default_max_length(longest) - 1
    decoding = dict(beam=beam, max_length=max_length, length_penalty=length_penalty,
                    truncate=True)
    model.translate(pairs.sources[:1], **decoding)
    start = time.perf_counter()
    translations = model.translate(pairs.sources, batch_size=batch_size, **decoding)
    seconds = time.perf_counter() - start
    # Generated tokens: each translation's subwords and its end token.
    tokens = int(model.preprocessor.target_lengths(translations).sum()) + len(translations)
    references = [list(pairs.targets)]
    result = {
        "bleu": round(sacrebleu.corpus_bleu(translations, references).score, 2),
        "chrf": round(sacrebleu.corpus_chrf(translations, references).score, 2),
        "sentences": len(translations),
        "beam": beam,
        "target_tokens_per_second": round(tokens / max(seconds, 1e-9), 1),
    }
    if lowercase:
        result["bleu_lowercase"] = round(
            sacrebleu.corpus_bleu(translations, references, lowercase=True).score, 2)
    result["translations"] = translations
    return result


class BleuCallback(keras.callbacks.Callback):
    """Adds validation BLEU and chrF (greedy decoding) to each epoch's logs.

    Place it before callbacks that read `"val_bleu"` (`TrainingRecord`'s
    early stopping) in the callbacks list: Keras hands every callback the
    same logs.

    Args:
        pairs: the validation pairs.
        batch_size: sentences decoded together.
    """

    def __init__(self, pairs: kdata.ParallelText, batch_size: int = 64):
        super().__init__()
        self.pairs = pairs
        self.batch_size = batch_size

    def on_epoch_end(self, epoch, logs=None):
        scores = score(self.model, self.pairs, beam=1, batch_size=self.batch_size)
        if logs is not None:
            logs["val_bleu"] = scores["bleu"]
            logs["val_chrf"] = scores["chrf"]
