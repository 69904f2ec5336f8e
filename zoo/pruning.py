"""`python -m zoo prune MODEL`: remove heads and feed-forward units, recover, measure.

The model (a preset, or a `.keras` file) is pruned with `kerasattn.prune`
in `--steps` equal steps towards `--heads` and `--ffn` (fractions of its
query heads and feed-forward units): each step scores heads and units
(Michel et al.'s gate gradients, on training batches), removes the least
important, fine-tunes for `--recovery-steps` (distilled from the unpruned
model unless `--no-distill`) and scores the model on the recipe's
validation data; a step that loses more than `--tolerance` points is undone
and pruning stops. The result is scored on the recipe's report data, both
models are exported to float32 LiteRT (each file checked against Keras) and
timed on one thread at batch 1, and `OUT` gets:

- `preset/`: the pruned model as a preset (`--preset OUT/preset`);
- `model.keras`: the same as one file;
- `pruning.json`: the options, every step, per-layer sizes, the metrics
  and latencies before and after;
- `pruning.md`: the model card's section;
- `pruning.png`: the validation metric against the fraction removed.

With `--json` the console gets one object: `{"heads": [before, after],
"parameters": [before, after], "metric": {"name", "before", "after"},
"litert_ms": [before, after]}`, the metric on the report data.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

PROG = "zoo prune"


@dataclasses.dataclass
class PruneSetup:
    """What `zoo prune` needs from a model's recipe (`Recipe.prune_setup`).

    Attributes:
        metric_name: the metric's name, such as `"accuracy"`.
        validate: the metric (higher is better, a fraction such as accuracy)
            of a model on the validation data the schedule stops on.
        report: the same metric on the data reported, never tuned on.
        validation_data: a few words on the validation data.
        report_data: a few words on the reported data.
        importance_batches: returns `(x, y[, sample_weight])` batches to
            score heads and units on.
        training_batches: repeating `(x, y[, sample_weight])` batches for the
            recovery fine-tuning.
        loss: the task's loss, `loss(y_true, y_pred, sample_weight)`, on the
            model's outputs (logits); `None` for the task's `compute_loss`.
        latency_inputs: one batch-1 example of the model's inputs, timed.
        sample_inputs: inputs to check the exported files on (raw, with
            `preprocessor`).
        preprocessor: the export's preprocessor, or `None`.
        export_model: the model exported and timed for a task (the task
            itself, or what the recipe ships, such as a retriever's
            candidate scorer).
        distillable: whether the model's output is one tensor of logits that
            `kerasattn.prune.DistillationLoss` can match; otherwise recovery
            is the task's own `fit` (its default loss).
        write_litert: `write_litert(model, folder)` writes the model's
            float32 LiteRT file, checked against Keras, into the new folder
            and returns its path, for a task whose shipped file is not
            `kerasattn.export.export` of `export_model` (the translator's
            decoding loop); `None` for that export of `sample_inputs`.
    """

    metric_name: str
    validate: Callable[[Any], float]
    report: Callable[[Any], float]
    validation_data: str
    report_data: str
    importance_batches: Callable[[], Iterable]
    training_batches: Iterable
    loss: Optional[Callable]
    latency_inputs: dict
    sample_inputs: Any
    preprocessor: Any = None
    export_model: Callable[[Any], Any] = lambda task: task
    distillable: bool = True
    write_litert: Optional[Callable[[Any, str], str]] = None


def add_arguments(parser: argparse.ArgumentParser, recipe) -> None:
    """`zoo prune MODEL`'s options, the recipe's own last."""
    from zoo import registry

    add = registry.option_adder(parser)
    parser.add_argument("--data", required=True, metavar="PATH",
                        help="the data the recipe trains on (a folder or a file, as `train`)")
    registry.add_model_source_arguments(parser, recipe.default_preset)
    parser.add_argument("--out", required=True, help="output folder")
    add("--heads", "fraction of the query heads to remove, in [0, 1)", type=float, default=0.4)
    add("--ffn", "fraction of the feed-forward units to remove, in [0, 1)", type=float,
        default=0.4)
    add("--tolerance", "largest validation metric loss accepted, in points (0.5 = half a "
        "percentage point)", type=float, default=0.5)
    add("--steps", "pruning steps to reach the fractions", type=int, default=5)
    add("--recovery-steps", "fine-tuning steps after each pruning step (0: none)", type=int,
        default=500)
    add("--learning-rate", "learning rate of the recovery fine-tuning", type=float, default=1e-4)
    add("--importance-batches", "training batches to score heads and units on", type=int,
        default=100)
    parser.add_argument("--no-distill", action="store_true",
                        help="recover on the labels alone (default: distilled from the "
                        "unpruned model where the task's output allows)")
    add("--alpha", "weight of the unpruned model's soft targets in the distilled loss, "
        "in [0, 1]", type=float, default=0.9)
    add("--temperature", "temperature of the soft targets", type=float, default=2.0)
    add("--latency-runs", "timed LiteRT runs per round", type=int, default=50)
    add("--latency-rounds", "rounds of timing, the two models interleaved", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the summary")
    recipe.add_prune_arguments(parser)


def _check(args: argparse.Namespace) -> None:
    from zoo import training

    training.check_option_ranges(args, non_negative=("tolerance",), rates=("heads", "ffn"))
    if not 0 <= args.alpha <= 1:
        raise ValueError(f"expected --alpha in [0, 1], received: {args.alpha}")
    if args.temperature <= 0:
        raise ValueError(f"expected --temperature > 0, received: {args.temperature}")
    for name in ("steps", "importance_batches", "latency_runs", "latency_rounds"):
        if getattr(args, name) <= 0:
            raise ValueError(f"expected --{name.replace('_', '-')} > 0, "
                             f"received: {getattr(args, name)}")
    if args.recovery_steps < 0:
        raise ValueError(f"expected --recovery-steps >= 0, received: {args.recovery_steps}")
    if not Path(args.data).exists():
        raise ValueError(f"{args.data}: expected the training data, received: no such file or "
                         "folder")
    out = Path(args.out)
    if out.exists() and (out / "preset").exists():
        raise ValueError(f"{out}: expected a new output folder, received: one with a preset")


def rebuild_task(task, updates: dict):
    """`kerasattn.prune.prune_model`'s `rebuild` for a zoo task: the same task on
    a backbone built from `backbone.pruned_config` (the backbone's arguments
    with per-block sizes), with the same preprocessor."""
    backbone = task.backbone
    prefix = f"{backbone.name}/"
    if not hasattr(backbone, "pruned_config"):
        raise ValueError(f"expected a backbone that can be pruned, received: a "
                         f"{type(backbone).__name__} without `pruned_config`")
    outside = sorted(path for path in updates if not path.startswith(prefix))
    if outside:
        raise ValueError(f"expected pruned layers inside the backbone, received: {outside}")
    config = backbone.pruned_config(
        {path[len(prefix):]: entries for path, entries in updates.items()})
    task_config = {**task.get_config(), "backbone": type(backbone).from_config(config),
                   "preprocessor": task.preprocessor}
    return type(task).from_config(task_config)


def _sizes(model) -> dict:
    from kerasattn import prune

    return {group.path: group.size for group in prune.find_prunable(model)}


def encoder_parameters(model) -> int:
    """Parameters of the layers pruning resizes: the attention layers and blocks."""
    from kerasattn import prune

    owners = {id(group.owner): group.owner for group in prune.find_prunable(model)}
    return int(sum(owner.count_params() for owner in owners.values()))


def _litert_ms(models: dict, setup: PruneSetup, folder: str, args) -> dict:
    """Each model exported to float32 LiteRT (checked against Keras), then timed
    at batch 1 on one thread, the files interleaved over the rounds (median)."""
    import statistics

    from kerasattn.export import LiteRTRuntime
    from kerasattn.export import export
    from zoo import console

    runtimes = {}
    for name, model in models.items():
        out = os.path.join(folder, name)
        with console.native_logging_silenced():
            if setup.write_litert is not None:
                path = setup.write_litert(model, out)
            else:
                export(setup.export_model(model), out, formats=("tflite",),
                       quantize=("float32",), sample_inputs=setup.sample_inputs,
                       preprocessor=setup.preprocessor, latency_runs=1)
                path = os.path.join(out, "model_float32.tflite")
            runtimes[name] = LiteRTRuntime(path)
    latencies: dict[str, list] = {name: [] for name in models}
    with console.native_logging_silenced():
        for _ in range(args.latency_rounds):
            for name, runtime in runtimes.items():
                inputs = {tensor["name"]: setup.latency_inputs[tensor["name"]]
                          for tensor in runtime.signature()["inputs"]}
                latencies[name].append(runtime.latency_ms(inputs, args.latency_runs))
    return {name: statistics.median(values) for name, values in latencies.items()}


def card_section(record: dict) -> str:
    """The model card's pruning section (Markdown) from `pruning.json`'s record."""
    metric, options = record["metric"], record["options"]
    lines = [
        "## Pruning",
        "",
        f"`{record['command']}`",
        "",
        f"Heads and feed-forward units scored by their gate gradients (Michel et al. 2019) on "
        f"{options['importance_batches']} training batches, removed in {options['steps']} "
        f"steps towards {options['heads']:.0%} of the heads and {options['ffn']:.0%} of the "
        f"units, each step fine-tuned for {options['recovery_steps']} steps"
        + (f" (distilled from the unpruned model: soft targets weighted {options['alpha']}, "
           f"temperature {options['temperature']})" if record["distilled"] else "")
        + "; "
        f"a step losing more than {options['tolerance']} points of validation "
        f"{metric['name']} ({record['validation_data']}) is undone and ends the schedule.",
        "",
        "| | before | after |",
        "|---|---|---|",
        f"| query heads | {record['heads'][0]} | {record['heads'][1]} |",
        f"| feed-forward units | {record['units'][0]} | {record['units'][1]} |",
        f"| parameters | {record['parameters'][0]:,} | {record['parameters'][1]:,} |",
        f"| parameters of the attention layers and blocks | {record['encoder_parameters'][0]:,} | "
        f"{record['encoder_parameters'][1]:,} |",
        f"| validation {metric['name']} | {metric['validation_before']:.4f} | "
        f"{metric['validation_after']:.4f} |",
        f"| {metric['name']} on {record['report_data']} | {metric['before']:.4f} | "
        f"{metric['after']:.4f} |",
        f"| LiteRT float32 ms (batch 1, 1 thread) | {record['litert_ms'][0]:.3f} | "
        f"{record['litert_ms'][1]:.3f} |",
        "",
        "Removed per layer:",
        "",
        "| layer | before | after |",
        "|---|---|---|",
    ]
    for path, before in record["sizes_before"].items():
        lines.append(f"| `{path}` | {before} | {record['sizes_after'][path]} |")
    lines += ["", "Schedule (validation):", "",
              f"| step | heads removed | units removed | {metric['name']} | parameters "
              "| accepted |",
              "|---|---|---|---|---|---|"]
    for index, step in enumerate(record["steps"]):
        lines.append(f"| {index} | {step['heads_removed']:.0%} | {step['units_removed']:.0%} | "
                     f"{step['metric']:.4f} | {step['parameters']:,} | "
                     f"{'yes' if step['accepted'] else 'no'} |")
    lines += ["", f"LiteRT ratio: {record['litert_ms'][0] / record['litert_ms'][1]:.2f}× "
              f"faster ({record['cpu']}; {record['timing_note']}).", ""]
    return "\n".join(lines)


def plot(record: dict, path: Path) -> None:
    """The validation metric against the fraction of heads and units removed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    from zoo.files import save_figure

    steps = record["steps"]
    figure, axes = pyplot.subplots(figsize=(5.5, 3.5))
    for key, label in (("heads_removed", "heads removed"), ("units_removed", "units removed")):
        axes.plot([step[key] for step in steps], [step["metric"] for step in steps],
                  marker="o", label=label)
    rejected = [step for step in steps if not step["accepted"]]
    if rejected:
        axes.scatter([step["heads_removed"] for step in rejected],
                     [step["metric"] for step in rejected], marker="x", color="red", s=60,
                     label="beyond the tolerance (undone)", zorder=3)
    baseline = steps[0]["metric"]
    tolerance = record["options"]["tolerance"] / 100
    axes.axhline(baseline - tolerance, color="grey", linestyle="--", linewidth=1,
                 label="tolerance")
    axes.set_xlabel("fraction removed")
    axes.set_ylabel(f"validation {record['metric']['name']}")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    save_figure(figure, path)
    pyplot.close(figure)


def _progress(line: str) -> None:
    print(f"[prune] {line}", file=sys.stderr, flush=True)


def _recovery_progress(steps: int):
    """A callback printing a `[prune]` line every tenth of a recovery's
    steps (on stderr: `--json` keeps stdout to its one object)."""
    import keras

    every = max(1, steps // 10)

    def report(batch, logs=None):
        done = batch + 1
        if done % every == 0 or done == steps:
            loss = (logs or {}).get("loss")
            _progress(f"  recovery step {done}/{steps}"
                      + ("" if loss is None else f", loss {float(loss):.4f}"))

    return keras.callbacks.LambdaCallback(on_train_batch_end=report)


def prune(recipe, args: argparse.Namespace, argv: list) -> dict:
    """Runs `zoo prune` (see the module's docstring) as `python -m zoo *argv`;
    returns the record written to `pruning.json`."""
    import keras

    from kerasattn import prune as kprune
    from kerasattn._files import write_atomically
    from zoo import files
    from zoo import training

    _check(args)
    keras.utils.set_random_seed(args.seed)
    start = time.time()
    model = recipe.load(args.preset, args.model)
    setup = recipe.prune_setup(model, args)
    original_sizes = _sizes(model)
    if not original_sizes:
        raise ValueError(f"expected a model with heads or feed-forward units, received: "
                         f"a {type(model).__name__} without any")
    _progress(f"scoring the unpruned model on {setup.validation_data}")

    def recover(candidate) -> None:
        if not args.recovery_steps:
            return
        callbacks = [_recovery_progress(args.recovery_steps)]
        if setup.distillable and not args.no_distill:
            kprune.fine_tune(
                candidate, setup.training_batches, steps=args.recovery_steps, loss=setup.loss,
                teacher=model, alpha=args.alpha, temperature=args.temperature,
                learning_rate=args.learning_rate, callbacks=callbacks)
            return
        candidate.compile(optimizer=keras.optimizers.AdamW(args.learning_rate))
        candidate.fit(setup.training_batches, steps_per_epoch=args.recovery_steps, epochs=1,
                      verbose=0, callbacks=callbacks)

    result = kprune.prune_iteratively(
        model, heads=args.heads, units=args.ffn, num_steps=args.steps,
        batches=setup.importance_batches, loss=setup.loss, evaluate=setup.validate,
        tolerance=args.tolerance / 100, recover=recover,
        rebuild=rebuild_task, max_batches=args.importance_batches, progress=_progress)
    pruned = result.model
    _progress(f"scoring both models on {setup.report_data}")
    report_before, report_after = setup.report(model), setup.report(pruned)
    accepted = [step for step in result.steps if step.accepted]
    _progress("exporting both models to LiteRT and timing them")
    with tempfile.TemporaryDirectory() as scratch:
        latency = _litert_ms({"before": model, "after": pruned}, setup, scratch, args)
    before_counts, after_counts = kprune.counts(model), kprune.counts(pruned)
    record = {
        "command": " ".join(["python -m zoo"] + argv),
        "options": {key: value for key, value in vars(args).items()
                    if key not in ("command", "model_name", "json")},
        "validation_data": setup.validation_data,
        "distilled": setup.distillable and not args.no_distill,
        "report_data": setup.report_data,
        "heads": [before_counts["heads"], after_counts["heads"]],
        "units": [before_counts["units"], after_counts["units"]],
        "parameters": [int(model.count_params()), int(pruned.count_params())],
        "encoder_parameters": [encoder_parameters(model), encoder_parameters(pruned)],
        "metric": {"name": setup.metric_name, "before": report_before, "after": report_after,
                   "validation_before": result.steps[0].metric,
                   "validation_after": accepted[-1].metric},
        "litert_ms": [latency["before"], latency["after"]],
        "sizes_before": original_sizes,
        "sizes_after": _sizes(pruned),
        "steps": [dataclasses.asdict(step) for step in result.steps],
        "cpu": training.cpu_name(),
        "timing_note": "median of rounds interleaving both files, measured in one process",
        "seconds": round(time.time() - start, 1),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    source = args.model or args.preset or recipe.default_preset
    # The preset is written whole beside its final name, then renamed.
    staging = Path(tempfile.mkdtemp(dir=out, prefix=".preset-"))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(staging, 0o777 & ~umask)  # mkdtemp's 0700, as a plain new folder would be
    try:
        pruned.save_to_preset(
            staging, description=f"{source} pruned: {after_counts['heads']} of "
            f"{before_counts['heads']} heads, {after_counts['units']} of "
            f"{before_counts['units']} feed-forward units",
            metrics={"name": setup.metric_name, "value": report_after,
                     "data": setup.report_data})
        os.replace(staging, out / "preset")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_atomically(out / "model.keras", pruned.save, suffix=".keras")
    files.write_json(out / "pruning.json", record)
    section = card_section(record)
    write_atomically(out / "pruning.md", lambda t: Path(t).write_text(section))
    plot(record, out / "pruning.png")
    return record


def summary(record: dict) -> dict:
    """The `--json` object."""
    metric = record["metric"]
    return {
        "heads": record["heads"],
        "parameters": record["parameters"],
        "metric": {"name": metric["name"], "before": metric["before"], "after": metric["after"]},
        "litert_ms": record["litert_ms"],
    }


def run(recipe, args: argparse.Namespace, argv: list) -> int:
    """`zoo prune MODEL`: exit status 0, or 2 with one line on stderr."""
    try:
        record = prune(recipe, args, argv)
    except ValueError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(summary(record)))
    else:
        metric = record["metric"]
        print(f"heads {record['heads'][0]} -> {record['heads'][1]}, parameters "
              f"{record['parameters'][0]:,} -> {record['parameters'][1]:,}, {metric['name']} "
              f"{metric['before']:.4f} -> {metric['after']:.4f} ({record['report_data']}), "
              f"LiteRT {record['litert_ms'][0]:.3f} -> {record['litert_ms'][1]:.3f} ms; "
              f"wrote {args.out}")
    return 0
