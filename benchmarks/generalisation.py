"""A recipe with default flags on several data sets of its kind, beside an anchor.

For each data set, the recipe runs as a user would run it (`python -m zoo
train MODEL --data DIR --out OUT`, no other flags unless `--flags` adds
some), in its own process, and its `metrics.json` gives the score, the wall
time, the parameters and the options it derived from the data. One row per
run is printed, beside the anchor's number on the same data:

- `--model classifier`: SST-2 (GLUE's dev sentences: the held-out test is
  not here), MR and SUBJ (one fold of Kim 2014's 10-fold cross-validation
  per run: the fold is the test split, the other nine train; `--folds`
  picks which). Anchor: Kim's CNN-rand, as published (SST-2: 82.7 on the
  test sentences of the binary task, MR 76.1, SUBJ 89.6).

A data set's folder is written under `--work` (the folds as `train.tsv` /
`dev.tsv`, read from `--data`; nothing is copied into the repository), and
each run's output folder is kept there, so running the same command again
resumes unfinished runs and reprints finished ones.

    python benchmarks/generalisation.py --model classifier --sets sst2,mr,subj --folds 0
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from zoo import console  # noqa: E402

# Kim (2014), CNN-rand: random word vectors, trained on the task alone.
CLASSIFIER_ANCHORS = {"sst2": 82.7, "mr": 76.1, "subj": 89.6}


def _fold_folder(source: Path, fold: int, folder: Path) -> Path:
    """`train.tsv` (every other fold) and `dev.tsv` (fold `fold`) of a 10-fold TSV."""
    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "dev.tsv").is_file():
        return folder
    # Lines end with "\n" only: str.splitlines would also split at the form feeds and
    # other separators a few sentences hold.
    lines = source.read_text(encoding="utf-8").split("\n")
    header, rows = lines[0].split("\t"), [line.split("\t") for line in lines[1:] if line]
    if header != ["sentence", "label", "fold"]:
        raise SystemExit(f"{source}: expected the header sentence, label, fold; received {header}")
    for name, keep in (("train", lambda row: int(row[2]) != fold),
                       ("dev", lambda row: int(row[2]) == fold)):
        text = "sentence\tlabel\n" + "".join(f"{row[0]}\t{row[1]}\n" for row in rows if keep(row))
        temporary = folder / f".{name}.tsv.tmp"
        temporary.write_text(text, encoding="utf-8")
        temporary.rename(folder / f"{name}.tsv")
    return folder


def classifier_runs(data: Path, work: Path, sets: list[str], folds: list[int]):
    """`(label, data folder, anchor)` per run."""
    for name in sets:
        if name == "sst2":
            yield "SST-2 (dev)", data / "sst2", CLASSIFIER_ANCHORS[name]
        else:
            for fold in folds:
                folder = work / "data" / f"{name}-{fold}"
                _fold_folder(data / name / "all.tsv", fold, folder)
                yield f"{name.upper()} (fold {fold})", folder, CLASSIFIER_ANCHORS[name]


def run_recipe(model: str, data: Path, out: Path, flags: list[str]) -> dict:
    """Runs the recipe in its own process (its log beside its output); returns metrics.json."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = out / "metrics.json"
    if not metrics.is_file():
        with open(out.parent / f"{out.name}.log", "a", encoding="utf-8") as log:
            subprocess.run([sys.executable, "-m", "zoo", "train", model, "--data", str(data),
                            "--out", str(out), "--verbose", "2", *flags],
                           check=True, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return json.loads(metrics.read_text(encoding="utf-8"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("classifier",), default="classifier")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="the shared data folder (default: %(default)s)")
    parser.add_argument("--work", default="generalisation_runs",
                        help="where the fold folders and the runs go (default: %(default)s)")
    parser.add_argument("--sets", default="sst2,mr,subj", help="data sets (default: %(default)s)")
    parser.add_argument("--folds", default="0", help="folds of MR and SUBJ (default: %(default)s)")
    parser.add_argument("--flags", default="", help="extra recipe flags, e.g. '--seed 2'")
    args = parser.parse_args()
    console.quiet()  # TensorFlow's start-up lines stay off the table
    from zoo import training

    work = Path(args.work).resolve()
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    folds = [int(fold) for fold in args.folds.split(",") if fold.strip()]
    flags = sorted(flag for flag in training.cpu_flags()
                   if flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"))
    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores, {' '.join(flags)}")
    print(f"{'data set':16} {'accuracy':>8} {'Kim CNN-rand':>12} {'minutes':>8} "
          f"{'parameters':>10}  derived")
    for label, folder, anchor in classifier_runs(Path(args.data), work, sets, folds):
        out = work / "runs" / f"{args.model}-{folder.name}"
        metrics = run_recipe("attention-transformer", folder, out, args.flags.split())
        derived = metrics.get("derived", {}).get("derived", {})
        print(f"{label:16} {100 * metrics['dev']['accuracy']:8.2f} {anchor:12.1f} "
              f"{metrics['wall_seconds'] / 60:8.1f} {metrics['parameters']:10,}  "
              + ", ".join(f"{key} {value}" for key, value in derived.items()), flush=True)


if __name__ == "__main__":
    main()
