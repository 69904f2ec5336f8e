"""The one exception type `kerasattn.export` raises."""

from __future__ import annotations

KINDS = ("argument", "conversion", "verification")


class ExportError(ValueError):
    """An export that could not be written or did not verify.

    Raised for bad arguments (the message names the argument, what was
    expected and what was received), for a conversion or runtime failure
    (naming the op and the layer it came from where the converter says), and
    for an artifact whose outputs differ from the Keras model's by more than
    its tolerance (naming the artifact, the difference and the tolerance).
    When it is raised, nothing has been written to the output folder.

    Args:
        message: the one-line reason.
        kind: `"argument"` (bad input: the caller can fix the call),
            `"conversion"` (a converter or runtime failed) or
            `"verification"` (an artifact's outputs are off). Defaults to
            `"argument"`.

    Example:

    ```python
    try:
        export(model, "out/", quantize=("full_int8",))
    except ExportError as error:
        print(error.kind, error)  # argument Expected `representative_data` ...
    ```
    """

    def __init__(self, message: str, kind: str = "argument"):
        if kind not in KINDS:
            raise ValueError(f"Expected `kind` to be one of {KINDS}, received: kind={kind!r}")
        super().__init__(message)
        self.kind = kind
