"""`python -m zoo export`: a `.keras` file to SavedModel, TFLite and ONNX, verified.

A thin command line over `kerasattn.export.export`: it loads the model,
reads sample and calibration inputs from `.npz` files, exports, and prints
a summary of the manifest. A translator goes to
`zoo.translator.export.export_translator` instead (strings in and out of the
SavedModel, the decoding loop in TFLite, an ONNX encoder and decoder step),
with `--beam`, `--max-length`, `--length-penalty` fixed at export and
`--data` a file of sentence pairs to measure parity with Keras on. Bad
input (a missing or non-Keras file, an unknown format or quantize mode,
arrays of the wrong shape) exits with status 2 and one line on stderr; a
failed conversion or check exits with 1.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Any, Dict, List

import numpy as np

from zoo import console

PROG = "zoo export"
# kerasattn.export.FORMATS and QUANTIZE_MODES, repeated here so that the
# command line rejects a bad choice before it loads TensorFlow.
FORMATS = ("saved_model", "tflite", "onnx")
QUANTIZE_MODES = ("float32", "float16", "dynamic_int8", "full_int8")


class _BadInput(Exception):
    """A problem with the command line's input, reported in one line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="the model, a .keras file")
    parser.add_argument(
        "--out", required=True, help="output folder (must not exist unless --overwrite)"
    )
    parser.add_argument(
        "--formats",
        default=",".join(FORMATS),
        help="comma-separated formats among %(default)s (default: all)",
    )
    parser.add_argument(
        "--quantize",
        default="float32",
        help=f"comma-separated TFLite modes among {','.join(QUANTIZE_MODES)} "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--sample-inputs",
        metavar="FILE.npz",
        help="inputs to verify on: arrays keyed by input name (or arr_0, arr_1, ... in input "
        "order); default: generated",
    )
    parser.add_argument(
        "--representative-data",
        metavar="FILE.npz",
        help="calibration inputs for full_int8, one batch in the same layout as --sample-inputs",
    )
    parser.add_argument(
        "--sequence-length",
        type=int,
        metavar="N",
        help="fixed TFLite sequence length, used if the dynamic length cannot convert",
    )
    parser.add_argument(
        "--latency-batch-size",
        type=int,
        default=8,
        help="larger batch timed (default: %(default)s)",
    )
    parser.add_argument(
        "--latency-runs",
        type=int,
        default=20,
        help="timed runs per batch size (default: %(default)s)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace --out if it is empty or a previous export"
    )
    translator = parser.add_argument_group(
        "translator", "for a zoo translator (its own artifacts: see zoo.translator.export)"
    )
    translator.add_argument(
        "--beam", type=int, default=4, help="beam width fixed in the graphs (default: %(default)s)"
    )
    translator.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="most target tokens, fixed in the graphs (default: the preprocessor's "
        "target_sequence_length)",
    )
    translator.add_argument(
        "--length-penalty",
        type=float,
        default=0.6,
        help="beam search's GNMT alpha (default: %(default)s)",
    )
    translator.add_argument(
        "--data",
        metavar="FILE",
        help="sentence pairs (source<TAB>target TSV, as zoo evaluate): its first 8 sources are "
        "the sample sentences, and every artifact's parity with Keras is measured on all of it",
    )


def _choices(option: str, value: str, allowed) -> List[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if not items or unknown:
        raise _BadInput(
            f"{option}: expected a comma-separated list of {','.join(allowed)}, received: {value!r}"
        )
    return items


def _check_model_path(path: str) -> None:
    if not os.path.isfile(path):
        raise _BadInput(f"{path}: no such file")
    if not path.endswith(".keras"):
        raise _BadInput(f"{path}: expected a Keras model file ending in .keras")


def _load_model(path: str):
    import keras

    import importlib

    # Registers the kerasattn layers and every zoo model's classes for loading.
    import kerasattn  # noqa: F401
    from zoo import registry

    for recipe in registry.recipes().values():
        importlib.import_module(recipe.package)

    try:
        model = keras.saving.load_model(path)
    except Exception as error:  # a zip that is not a model, a missing layer class, ...
        reason = next(
            (line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__
        )
        raise _BadInput(f"{path}: not a loadable Keras model: {reason}") from None
    if not isinstance(model, keras.Model):
        raise _BadInput(f"{path}: expected a Keras model, received a {type(model).__name__}")
    return model


def _load_arrays(option: str, path: str):
    """An `.npz` file as one input structure: a dict, or a list for arr_0, arr_1, ..."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("a single array (.npy), not an .npz archive")
        with data:
            arrays: Dict[str, Any] = {name: data[name] for name in data.files}
    except (OSError, ValueError) as error:
        raise _BadInput(
            f"{option} {path}: expected an .npz file of arrays, received: {error}"
        ) from None
    if not arrays:
        raise _BadInput(
            f"{option} {path}: expected at least one array, received an empty .npz file"
        )
    if all(re.fullmatch(r"arr_\d+", name) for name in arrays):
        ordered = [arrays[f"arr_{i}"] for i in range(len(arrays)) if f"arr_{i}" in arrays]
        if len(ordered) != len(arrays):
            raise _BadInput(
                f"{option} {path}: expected arrays arr_0 ... arr_{len(arrays) - 1}, "
                f"received: {sorted(arrays)}"
            )
        return ordered[0] if len(ordered) == 1 else ordered
    return arrays


def _summary(manifest: Dict[str, Any], out_dir: str) -> str:
    batch = max(manifest["latency"]["batch_sizes"])
    header = ("artifact", "size", "max |diff|", "tolerance", "ms @ batch 1", f"ms @ batch {batch}")
    rows = [header]
    for name, artifact in manifest["artifacts"].items():
        latency = artifact["latency_ms"]
        rows.append(
            (
                name
                + (
                    f" (length {artifact['fixed_sequence_length']})"
                    if artifact["fixed_sequence_length"]
                    else ""
                ),
                f"{artifact['size_bytes'] / 1024:.1f} KiB",
                f"{artifact['max_abs_difference']:.2e}",
                f"{artifact['tolerance']:g}",
                f"{latency['batch_1']:.3f}",
                f"{latency[f'batch_{batch}']:.3f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"exported {manifest['model']} to {out_dir} (manifest.json lists every artifact):"]
    for row in rows:
        lines.append(
            "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
        )
    return "\n".join(lines)


def _translator_summary(manifest: Dict[str, Any], out_dir: str) -> str:
    rows = [("artifact", "size", "greedy = keras", "beam = keras", "beam BLEU diff",
             "ms @ batch 1")]
    for name, artifact in manifest["artifacts"].items():
        parity = artifact["parity"]
        latency = artifact.get("latency_ms") or artifact["signatures"]["translate"]["latency_ms"]
        rows.append((
            name,
            f"{artifact['size_bytes'] / 1024:.1f} KiB",
            f"{parity.get('greedy_identical_fraction', '-')}",
            f"{parity.get('beam_identical_fraction', '-')}",
            f"{parity.get('beam_bleu_difference', '-')}",
            f"{latency['batch_1']:.3f}",
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"exported {manifest['model']} (beam {manifest['beam']}, max length "
             f"{manifest['max_length']}) to {out_dir} (manifest.json lists every artifact):"]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    data = manifest.get("parity_on_data")
    if data:
        lines.append(f"parity on {data['sentences']} pairs of --data: " + "; ".join(
            f"{name} greedy {entry['greedy_identical_fraction']}"
            + (f", beam BLEU diff {entry['beam_bleu_difference']}" if "beam_bleu" in entry
               else "")
            for name, entry in data["artifacts"].items()) + f" (Keras: {data['keras']})")
    return "\n".join(lines)


def _export_translator(model, args: argparse.Namespace, formats, quantize) -> Dict[str, Any]:
    """`zoo export` of a translator: `zoo.translator.export.export_translator`."""
    from kerasattn import data as kdata
    from zoo.translator.export import export_translator

    if list(formats) != list(FORMATS) or list(quantize) != ["float32"]:
        raise _BadInput("a translator exports every format in float32 (SavedModel, TFLite and "
                        "ONNX); leave out --formats and --quantize")
    for option in ("sample_inputs", "representative_data", "sequence_length"):
        if getattr(args, option) is not None:
            raise _BadInput(f"--{option.replace('_', '-')}: not for a translator (use --data)")
    if args.beam <= 0 or (args.max_length is not None and args.max_length <= 0):
        raise _BadInput(f"--beam, --max-length: expected positive integers, received: "
                        f"{args.beam}, {args.max_length}")
    pairs = None
    if args.data is not None:
        try:
            pairs = kdata.read_parallel_text(args.data)
        except ValueError as error:
            raise _BadInput(str(error)) from None
    return export_translator(
        model, args.out, sample_texts=None if pairs is None else pairs.sources[:8],
        beam=args.beam, max_length=args.max_length, length_penalty=args.length_penalty,
        parity_data=pairs, latency_runs=args.latency_runs, overwrite=args.overwrite)


def run(args: argparse.Namespace) -> int:
    """Runs `zoo export` on parsed arguments; returns the exit status."""
    try:
        _check_model_path(args.model)
        if os.path.lexists(args.out) and not args.overwrite:
            raise _BadInput(f"--out {args.out}: exists; pass --overwrite to replace it")
        formats = _choices("--formats", args.formats, FORMATS)
        quantize = _choices("--quantize", args.quantize, QUANTIZE_MODES)
        if "tflite" in formats and "full_int8" in quantize and args.representative_data is None:
            raise _BadInput(
                "--quantize full_int8 needs --representative-data FILE.npz (calibration inputs)"
            )
        for option in ("sequence_length", "latency_batch_size", "latency_runs"):
            value = getattr(args, option)
            if value is not None and value <= 0:
                raise _BadInput(
                    f"--{option.replace('_', '-')}: expected a positive integer, received: {value}"
                )
        sample_inputs = None
        if args.sample_inputs is not None:
            sample_inputs = _load_arrays("--sample-inputs", args.sample_inputs)
        representative = None
        if args.representative_data is not None:
            representative = _load_arrays("--representative-data", args.representative_data)
            if isinstance(representative, list):
                representative = [
                    representative
                ]  # one batch of several inputs, not several batches
        # Imported only now: TensorFlow takes seconds to load, and logs as it does.
        from kerasattn.export import ExportError, export

        model = _load_model(args.model)
        from zoo.translator.model import Translator

        translator = isinstance(model, Translator)
        if not translator and args.data is not None:
            raise _BadInput("--data: only for a translator")
    except _BadInput as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    try:
        with console.native_logging_silenced():  # the LiteRT interpreter's delegate notice
            if translator:
                manifest = _export_translator(model, args, formats, quantize)
                print(_translator_summary(manifest, args.out))
                return 0
            manifest = export(
                model,
                args.out,
                formats=formats,
                quantize=quantize,
                sample_inputs=sample_inputs,
                representative_data=representative,
                sequence_length=args.sequence_length,
                latency_batch_size=args.latency_batch_size,
                latency_runs=args.latency_runs,
                overwrite=args.overwrite,
            )
    except _BadInput as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except ExportError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2 if error.kind == "argument" else 1
    print(_summary(manifest, args.out))
    return 0
