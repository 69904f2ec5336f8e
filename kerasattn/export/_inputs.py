"""Model input specs, and the sample and calibration inputs checked against them.

Inside the export every set of inputs is a dict `name -> np.ndarray`, keyed
by the serving signature's input names, with the model's batch axis first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Tuple

import keras
import numpy as np

from kerasattn.export._errors import ExportError

Inputs = Dict[str, np.ndarray]

# Lengths of the generated sample inputs along a dynamic sequence axis: the
# second, shorter set proves the exported models accept other lengths too.
GENERATED_BATCH = 4
GENERATED_LENGTHS = (8, 5)
# Size of other dynamic (non-batch, non-sequence) axes in generated inputs.
GENERATED_OTHER_DIM = 4
# Token ids are drawn below this when no Embedding layer bounds them.
DEFAULT_ID_LIMIT = 10


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One model input: `shape` has `None` for the batch and dynamic axes."""

    name: str
    shape: Tuple[Optional[int], ...]
    dtype: str

    @property
    def dynamic_sequence(self) -> bool:
        """Whether axis 1 (the sequence axis, by convention) is dynamic."""
        return len(self.shape) >= 2 and self.shape[1] is None

    def describe(self) -> str:
        dims = ", ".join("None" if d is None else str(d) for d in self.shape)
        return f"shape ({dims}{',' if len(self.shape) == 1 else ''}) and dtype {self.dtype}"

    def as_json(self) -> Dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}


def input_structure(model: keras.Model):
    """The structure (tensor, list or dict of `KerasTensor`s) the model is called with."""
    try:
        return model.input
    except (AttributeError, ValueError):
        # A Sequential model that was never called has `inputs` but no `input`.
        inputs = model.inputs
        return inputs[0] if len(inputs) == 1 else list(inputs)


def model_input_specs(model: keras.Model) -> List[InputSpec]:
    """The model's inputs in `model.inputs` order, named as the serving signature names them."""
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise _error(
            "`model` to have defined inputs (a functional or Sequential model "
            "built on `keras.Input`)",
            f"model={type(model).__name__} {model.name!r} without inputs",
        )
    # The serving signature names its arguments after the input tensors
    # (also for dict inputs, whose keys Keras expects to be those names).
    specs = [
        InputSpec(
            tensor.name,
            (None,) + tuple(tensor.shape[1:]),
            keras.backend.standardize_dtype(tensor.dtype),
        )
        for tensor in inputs
    ]
    for spec in specs:
        if spec.dtype == "string":
            # TFLite and ONNX have no built-in string ops; tokenise before the model.
            raise _error(
                "numeric or boolean model inputs (export the model without its string "
                "preprocessing)",
                f"input {spec.name!r} of dtype string",
            )
    return specs


def to_model_structure(model: keras.Model, inputs: Inputs):
    """Packs `inputs` into the structure `model(...)` expects."""
    return keras.tree.map_structure(lambda tensor: inputs[tensor.name], input_structure(model))


def _error(expected: str, received: str) -> ExportError:
    return ExportError(f"Expected {expected}, received: {received}")


def _dtype_kind(dtype: str) -> str:
    """"i" (signed or unsigned integer), "f" (float) or "b" (bool)."""
    return np.dtype(dtype).kind.replace("u", "i")


def check_inputs(value: Any, specs: List[InputSpec], argument: str) -> Inputs:
    """Checks one input structure against `specs` and returns it as a dict.

    `value` is an array (one-input models), a list or tuple of arrays in the
    order of `model.inputs`, or a dict keyed by input name. Arrays are cast
    to the input's dtype when the kind (integer, float, bool) agrees.
    """
    names = [spec.name for spec in specs]
    if isinstance(value, dict):
        if sorted(value) != sorted(names):
            raise _error(f"`{argument}` to have the keys {sorted(names)}", f"keys {sorted(value)}")
        arrays = [value[name] for name in names]
    elif len(specs) == 1:
        # One input: a one-item list wraps the array; any other list is the array.
        wrapped = isinstance(value, (list, tuple)) and len(value) == 1
        arrays = [value[0] if wrapped and np.ndim(value[0]) == len(specs[0].shape) else value]
    elif isinstance(value, (list, tuple)):
        if len(value) != len(specs):
            raise _error(
                f"`{argument}` to hold {len(specs)} arrays (inputs {names})",
                f"{len(value)} items",
            )
        arrays = list(value)
    else:
        raise _error(
            f"`{argument}` to be a list or dict of {len(specs)} arrays (inputs {names})",
            f"{type(value).__name__}",
        )

    checked: Inputs = {}
    for spec, array in zip(specs, arrays):
        where = f"`{argument}`" + (f" for input {spec.name!r}" if len(specs) > 1 else "")
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise _error(f"{where} to be an array", f"{type(array).__name__} ({error})") from None
        if array.ndim != len(spec.shape) or any(
            want is not None and got != want for got, want in zip(array.shape, spec.shape)
        ):
            raise _error(f"{where} to have {spec.describe()}", f"shape {array.shape}")
        if 0 in array.shape:
            raise _error(f"{where} to be non-empty", f"shape {array.shape}")
        if _dtype_kind(str(array.dtype)) != _dtype_kind(spec.dtype):
            raise _error(f"{where} to have dtype {spec.dtype}", f"dtype {array.dtype}")
        checked[spec.name] = array.astype(spec.dtype)
    batches = {array.shape[0] for array in checked.values()}
    if len(batches) > 1:
        raise _error(
            f"the arrays of `{argument}` to share one batch size", f"batch sizes {sorted(batches)}"
        )
    return checked


def check_representative_data(data: Any, specs: List[InputSpec]) -> List[Inputs]:
    """Splits representative data into batch-1 examples, each checked against `specs`.

    `data` is either one batch (an array, or a dict of arrays) or an iterable
    of input structures, each with a batch of one or more examples.
    """
    if isinstance(data, (np.ndarray, dict)):
        batches = [check_inputs(data, specs, "representative_data")]
    else:
        try:
            items = list(data)
        except TypeError:
            raise _error(
                "`representative_data` to be an array, a dict of arrays or an iterable of input "
                "structures",
                f"{type(data).__name__}",
            ) from None
        batches = [
            check_inputs(item, specs, f"representative_data[{index}]")
            for index, item in enumerate(items)
        ]
    examples = [
        {name: array[row : row + 1] for name, array in batch.items()}
        for batch in batches
        for row in range(next(iter(batch.values())).shape[0])
    ]
    if not examples:
        raise _error("`representative_data` to hold at least one example", "none")
    return examples


def _embedding_limit(model: keras.Model) -> int:
    """The smallest `input_dim` of the model's Embedding layers: a safe id bound."""
    limits = [
        layer.input_dim
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.Embedding)
    ]
    return min(limits) if limits else DEFAULT_ID_LIMIT


def generate_inputs(model: keras.Model, specs: List[InputSpec], seed: int = 0) -> Inputs:
    """Random inputs for `specs`, `GENERATED_BATCH` rows, dynamic axes sized 8 / 4.

    Integer inputs hold ids in [1, smallest Embedding `input_dim`) with
    trailing zeros (padding) on every other row, so masks are exercised;
    floats are standard normal; booleans are `True` but for a padded tail.
    """
    rng = np.random.default_rng(seed)
    limit = _embedding_limit(model)
    generated: Inputs = {}
    for spec in specs:
        shape = [GENERATED_BATCH] + [
            (GENERATED_LENGTHS[0] if axis == 1 else GENERATED_OTHER_DIM) if dim is None else dim
            for axis, dim in enumerate(spec.shape[1:], start=1)
        ]
        kind = _dtype_kind(spec.dtype)
        if kind == "f":
            array = rng.standard_normal(shape)
        elif kind == "i":
            array = rng.integers(1, max(limit, 2), size=shape)
        else:
            array = np.ones(shape, bool)
        if kind in "ib" and len(shape) >= 2:
            for row in range(1, GENERATED_BATCH, 2):
                array[row, shape[1] - min(row, shape[1] - 1) :] = 0
        generated[spec.name] = array.astype(spec.dtype)
    return generated


def with_length(inputs: Inputs, specs: List[InputSpec], length: int) -> Inputs:
    """`inputs` with every dynamic sequence axis cut or zero-padded to `length`."""
    resized = {}
    for spec in specs:
        array = inputs[spec.name]
        if spec.dynamic_sequence and array.shape[1] != length:
            if array.shape[1] > length:
                array = array[:, :length]
            else:
                padding = [(0, 0)] * array.ndim
                padding[1] = (0, length - array.shape[1])
                array = np.pad(array, padding)
        resized[spec.name] = array
    return resized


def shorter_inputs(inputs: Inputs, specs: List[InputSpec]) -> Optional[Inputs]:
    """A second verification set with the dynamic sequence axes cut short.

    Generated inputs go from 8 to 5 steps; given ones are cut to about 5/8 of
    their length. `None` when there is no dynamic sequence axis, or it is
    already of length 1.
    """
    cut = {}
    for spec in specs:
        array = inputs[spec.name]
        if spec.dynamic_sequence and array.shape[1] > 1:
            length = max(1, array.shape[1] * GENERATED_LENGTHS[1] // GENERATED_LENGTHS[0])
            array = array[:, :length]
        cut[spec.name] = array
    if all(cut[name].shape == inputs[name].shape for name in inputs):
        return None
    return cut


def batch_of(inputs: Inputs, size: int) -> Inputs:
    """`size` rows of `inputs`, repeating rows as needed (for latency runs)."""
    return {
        name: np.take(array, np.arange(size) % array.shape[0], axis=0)
        for name, array in inputs.items()
    }


def shapes(inputs: Inputs) -> Dict[str, List[int]]:
    return {name: list(array.shape) for name, array in inputs.items()}
