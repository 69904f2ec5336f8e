"""Text normalisation shared by the vocabulary learner and the preprocessor."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_text as tf_text

NORMALIZATION_FORMS = ("NFC", "NFKC", "NFD", "NFKD")

# The characters BERT's basic tokenizer blanks out: control (Cc, which
# includes tab and newline) and format characters (Cf, e.g. zero-width space).
_CONTROL_CHARACTERS = r"\p{Cc}|\p{Cf}"


def check_normalization_form(normalization_form: str | None) -> str | None:
    """Returns `normalization_form` if it is a Unicode form or `None`."""
    if normalization_form is not None and normalization_form not in NORMALIZATION_FORMS:
        raise ValueError(
            f"Expected `normalization_form` to be one of {NORMALIZATION_FORMS} or None, "
            f"received: normalization_form={normalization_form!r}"
        )
    return normalization_form


def normalize_text(
    strings: tf.Tensor | tf.RaggedTensor,
    lower_case: bool = True,
    normalization_form: str | None = "NFKC",
) -> tf.Tensor | tf.RaggedTensor:
    """Normalises UTF-8 strings the way `TextPreprocessor` does.

    In this order:

    1. control and format characters (Unicode categories Cc and Cf: tab,
       newline, zero-width space, ...) become a space, as in BERT;
    2. if `lower_case`, `tensorflow_text.case_fold_utf8` folds case with
       ICU's NFKC_Casefold (so it also applies NFKC: "ＭＯＶＩＥ" -> "movie",
       "Straße" -> "strasse"); accents are kept ("Café" -> "café");
    3. if `normalization_form` is not `None`,
       `tensorflow_text.normalize_utf8` brings the text to that form.

    Args:
        strings: string tensor (or ragged tensor) of any shape.
        lower_case: whether to fold case. Defaults to `True`.
        normalization_form: `"NFC"`, `"NFKC"`, `"NFD"`, `"NFKD"` or `None`
            (no normalisation beyond what case folding implies). Defaults
            to `"NFKC"`.

    Returns:
        The normalised strings, same shape.

    Example:

    >>> normalize_text(tf.constant(["ＭＯＶＩＥ\tNight"])).numpy()
    array([b'movie night'], dtype=object)
    """
    check_normalization_form(normalization_form)
    strings = tf.strings.regex_replace(strings, _CONTROL_CHARACTERS, " ")
    if lower_case:
        strings = tf_text.case_fold_utf8(strings)
    if normalization_form is not None:
        strings = tf_text.normalize_utf8(strings, normalization_form)
    return strings
