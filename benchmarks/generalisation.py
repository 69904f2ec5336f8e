"""A recipe with default flags on several data sets of its kind, beside an anchor.

For each data set, the recipe runs as a user would run it (`python -m zoo
train MODEL --data DIR --out OUT`, no other flags unless `--flags` adds
some), in its own process, and its `metrics.json` gives the score, the wall
time, the parameters and the options it derived from the data. One row per
run is printed, beside the anchor's number on the same data:

- `--model classifier`: SST-2 (GLUE's dev sentences: the held-out test is
  not here), MR and SUBJ (one fold of Kim 2014's 10-fold cross-validation
  per run: the fold is the test split, the other nine train; `--folds`
  picks which), and `mention-types`, a stand-in for the question-type set
  (below). Anchors: Kim's CNN-rand as published (SST-2: 82.7 on the test
  sentences of the binary task, MR 76.1, SUBJ 89.6, question types 91.2),
  and, on every set but SST-2, Kim's CNN-rand trained by this script on
  the same split (`run_cnn_rand`).
- `mention-types` has the question-type set's size, classes and class
  balance, not its language: TREC-6's 5,452 training and 500 test rows
  with its class counts (86 for the rarest), each row an entity mention
  with five words of context either side, marked `[ ... ]`, labelled with
  its type: CoNLL-2003's PER, ORG, LOC, MISC and BC5CDR's Disease and
  Chemical (the 86-row class), training rows from their train files and
  test rows from their valid files, one mention per sentence, seed 0.
- `--model tagger`: CoNLL-2003, BC5CDR and NCBI-disease (valid: the test
  splits are not here). Anchor: spaCy 3.8's NER trained from scratch on the
  same files by this script, as the issue ran it: `init config --optimize
  accuracy` for CPU without static vectors, 3,000 steps, the best
  checkpoint on valid kept (spaCy's own selection); its valid tags are
  scored by the same seqeval call as ours (`entity_scores`). spaCy is
  installed for this benchmark only (`pip install spacy==3.8.16`), never a
  dependency.
- `--model recommender`: Video Games (SASRec's file) and MovieLens-100k,
  both protocols (100 sampled negatives; the full catalogue), test scored
  once at the best validation epoch. Anchors: SASRec as issue 12 recorded
  it on Video Games (HR@10 0.7442, NDCG@10 0.5376, sampled protocol), and
  on MovieLens-100k a SASRec.pytorch-style run on the same split by this
  script: `benchmarks/sasrec_speed.py`'s PyTorch SASRec from the paper with
  SASRec.pytorch's MovieLens-1M settings (length 200, width 50, 2 blocks,
  1 head, dropout 0.2, batch 128, Adam 1e-3, BCE with one negative),
  validated every 20 epochs up to as many optimizer steps as our rule
  gives (10,000) and stopped after 10 validations without a better
  NDCG@10; the best validation's weights score test. PyTorch is installed
  for this benchmark only (a `torch-*+cpu` wheel), never a dependency.

A data set's folder is written under `--work` (the folds as `train.tsv` /
`dev.tsv`, read from `--data`; nothing is copied into the repository), and
each run's output folder is kept there, so running the same command again
resumes unfinished runs and reprints finished ones.

    python benchmarks/generalisation.py --model classifier --sets sst2,mr,subj --folds 0
    python benchmarks/generalisation.py --model tagger --sets conll2003,bc5cdr,ncbi-disease
    python benchmarks/generalisation.py --model recommender --sets ml-100k
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

# Kim (2014), CNN-rand: random word vectors, trained on the task alone (the
# stand-in's is the question-type set's, TREC).
CLASSIFIER_ANCHORS = {"sst2": 82.7, "mr": 76.1, "subj": 89.6, "mention-types": 91.2}
# The stand-in's classes, with TREC-6's training and test counts in the same
# order of size: (type, source, training rows, test rows).
MENTION_TYPES = (("ORG", "conll2003", 1250, 94), ("PER", "conll2003", 1223, 65),
                 ("Disease", "bc5cdr", 1162, 138), ("MISC", "conll2003", 896, 113),
                 ("LOC", "conll2003", 835, 81), ("Chemical", "bc5cdr", 86, 9))
MENTION_CONTEXT = 5  # words either side of the mention
TAGGER_SETS = ("conll2003", "bc5cdr", "ncbi-disease")
SPACY_STEPS = 3000
RECOMMENDER_SETS = {"video": "sasrec/Video.txt", "ml-100k": "ml-100k"}
# Issue 12's record of SASRec on Video Games (sampled protocol).
SASREC_VIDEO = {"hr@10": 0.7442, "ndcg@10": 0.5376}
SASREC_STEPS = 10_000
SASREC_EVERY = 20  # epochs between validations, as SASRec.pytorch
SASREC_PATIENCE = 10  # validations


def _write_tsv(path: Path, rows: list[tuple[str, str]]) -> None:
    """`rows` as a `sentence<TAB>label` TSV, written beside and renamed (no half-written file)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n"
                                                        for text, label in rows),
                         encoding="utf-8")
    temporary.rename(path)


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
        _write_tsv(folder / f"{name}.tsv", [(row[0], row[1]) for row in rows if keep(row)])
    return folder


def _mention_rows(data: Path, split: str, counts: dict[str, int],
                  rng) -> list[tuple[str, str]]:
    """`counts[type]` mentions of each type from `split`.txt, one per sentence."""
    from kerasattn.data import conll

    rows = []
    for source in sorted({source for _, source, _, _ in MENTION_TYPES}):
        sentences = conll.read_conll(data / source / f"{split}.txt")
        mentions = {}  # type -> [(tokens, start, end)], one per sentence
        for index in rng.permutation(len(sentences)):
            tokens = sentences.tokens[index]
            spans = conll.entity_spans(sentences.tags[index], sentences.scheme)
            if spans:
                kind, start, end = spans[rng.integers(len(spans))]
                mentions.setdefault(kind, []).append((tokens, start, end))
        for kind, source_of, _, _ in MENTION_TYPES:
            if source_of != source:
                continue
            if len(mentions.get(kind, ())) < counts[kind]:
                raise SystemExit(f"{data / source / split}.txt: fewer than {counts[kind]} "
                                 f"sentences with a {kind} mention")
            for tokens, start, end in mentions[kind][: counts[kind]]:
                words = (tokens[max(0, start - MENTION_CONTEXT): start] + ["["]
                         + tokens[start:end] + ["]"] + tokens[end: end + MENTION_CONTEXT])
                rows.append((" ".join(words), kind))
    rng.shuffle(rows)
    return rows


def _mention_types_folder(data: Path, folder: Path) -> Path:
    """The question-type stand-in (see the module's docstring) as `train.tsv` / `dev.tsv`."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "dev.tsv").is_file():
        return folder
    rng = np.random.default_rng(0)
    for name, split, column in (("train", "train", 2), ("dev", "valid", 3)):
        counts = {entry[0]: entry[column] for entry in MENTION_TYPES}
        _write_tsv(folder / f"{name}.tsv", _mention_rows(data, split, counts, rng))
    return folder


def classifier_runs(data: Path, work: Path, sets: list[str], folds: list[int]):
    """`(label, data folder, anchor)` per run."""
    for name in sets:
        if name == "sst2":
            yield "SST-2 (dev)", data / "sst2", CLASSIFIER_ANCHORS[name]
        elif name == "mention-types":
            folder = _mention_types_folder(data, work / "data" / name)
            yield "mention types", folder, CLASSIFIER_ANCHORS[name]
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


def _write_json(path: Path, value: dict) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")
    temporary.rename(path)


def run_cnn_rand(folder: Path, out: Path, seed: int = 1) -> dict:
    """Kim (2014)'s CNN-rand trained on `folder`'s `train.tsv`, scored on its `dev.tsv`.

    Kim's settings: words split at spaces (the sets are tokenised), every
    training word a random 300-d vector (uniform in ±0.25) trained with the
    model, convolutions of widths 3, 4 and 5 with 100 maps each, ReLU,
    max-over-time pooling, dropout 0.5, each class's weight vector kept to
    an L2 norm of at most 3, Adadelta (rho 0.95), batches of 50, 25 epochs,
    the epoch chosen on a random 10 % of `train.tsv`. Unlike Kim's code, the
    padding's vector is trained rather than held at zero, and words unseen
    in training share one vector. Returns (and keeps, in `out/metrics.json`)
    the test accuracy (overall and per class), the chosen epoch, the wall
    time and the parameters.
    """
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text(encoding="utf-8"))
    import time

    import keras
    import numpy as np

    from kerasattn import data as kdata

    start = time.perf_counter()
    keras.utils.set_random_seed(seed)
    train = kdata.read_text_classification(folder / "train.tsv", min_classes=2)
    test = kdata.read_text_classification(folder / "dev.tsv", labels=train.label_names)
    order = np.random.default_rng(seed).permutation(len(train.texts))
    held, kept = order[: len(order) // 10], order[len(order) // 10:]
    words = sorted({word for i in kept for word in train.texts[i].split()})
    index = {word: i + 2 for i, word in enumerate(words)}  # 0: padding, 1: unseen
    widths = (3, 4, 5)
    length = max(len(text.split()) for text in train.texts) + 2 * (max(widths) - 1)

    def ids(texts: list[str]) -> np.ndarray:
        array = np.zeros((len(texts), length), np.int32)
        for row, text in enumerate(texts):
            # Kim pads the front with width - 1 zeros so that edge words fill every window.
            tokens = [index.get(word, 1) for word in text.split()][: length - max(widths) + 1]
            array[row, max(widths) - 1: max(widths) - 1 + len(tokens)] = tokens
        return array

    inputs = keras.Input((length,), dtype="int32")
    vectors = keras.layers.Embedding(
        len(words) + 2, 300,
        embeddings_initializer=keras.initializers.RandomUniform(-0.25, 0.25))(inputs)
    pooled = [keras.layers.GlobalMaxPooling1D()(
        keras.layers.Conv1D(100, width, activation="relu")(vectors)) for width in widths]
    features = keras.layers.Dropout(0.5)(keras.layers.Concatenate()(pooled))
    logits = keras.layers.Dense(len(train.label_names),
                                kernel_constraint=keras.constraints.MaxNorm(3, axis=0))(features)
    model = keras.Model(inputs, logits)
    model.compile(optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95,
                                                      epsilon=1e-6),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])
    texts = np.array(train.texts, dtype=object)
    choose = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=25,
                                           restore_best_weights=True)
    history = model.fit(ids(list(texts[kept])), train.labels[kept], batch_size=50, epochs=25,
                        validation_data=(ids(list(texts[held])), train.labels[held]),
                        callbacks=[choose], verbose=0)
    predicted = np.argmax(model.predict(ids(test.texts), batch_size=500, verbose=0), axis=-1)
    correct = predicted == test.labels
    per_class = {name: float(np.mean(correct[test.labels == i]))
                 for i, name in enumerate(train.label_names) if np.any(test.labels == i)}
    validation = history.history["val_accuracy"]
    result = {"dev": {"accuracy": float(np.mean(correct)), "per_class": per_class},
              "best_epoch": int(np.argmax(validation)) + 1,
              "validation_accuracy": float(max(validation)),
              "wall_seconds": round(time.perf_counter() - start, 1),
              "parameters": model.count_params(), "keras": keras.__version__}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(metrics, result)
    return result


def run_spacy_ner(folder: Path, out: Path) -> dict:
    """spaCy's NER from scratch on `folder`'s train.txt, scored on its valid.txt;
    returns (and keeps, in `out/metrics.json`) the scores and the wall time."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text(encoding="utf-8"))
    import time

    import spacy
    from spacy.cli.init_config import init_config
    from spacy.cli.train import train
    from spacy.tokens import Doc, DocBin, Span

    from kerasattn import data as kdata
    from zoo.sequence_tagger.data import entity_scores, read_splits

    splits = read_splits(folder)
    nlp = spacy.blank("en")
    out.mkdir(parents=True, exist_ok=True)
    for name, sentences in (("train", splits.train), ("valid", splits.validation)):
        docs = DocBin()
        for tokens, tags in zip(sentences.tokens, sentences.tags):
            doc = Doc(nlp.vocab, words=tokens)
            doc.ents = [Span(doc, start, end, label=label)
                        for label, start, end in kdata.entity_spans(tags, sentences.scheme)]
            docs.add(doc)
        docs.to_disk(out / f"{name}.spacy")
    config = init_config(lang="en", pipeline=["ner"], optimize="accuracy", gpu=False)
    # No static vectors: none can be downloaded, and the spaCy run had none.
    config["components"]["tok2vec"]["model"]["embed"]["include_static_vectors"] = False
    config["initialize"]["vectors"] = None
    config["paths"]["train"] = str(out / "train.spacy")
    config["paths"]["dev"] = str(out / "valid.spacy")
    config["training"]["max_steps"] = SPACY_STEPS
    config.to_disk(out / "config.cfg")
    start = time.perf_counter()
    train(out / "config.cfg", out / "model", use_gpu=-1)
    wall = time.perf_counter() - start
    best = spacy.load(out / "model" / "model-best")
    predicted = []
    for doc in best.pipe(Doc(best.vocab, words=tokens) for tokens in splits.validation.tokens):
        predicted.append([f"{token.ent_iob_}-{token.ent_type_}" if token.ent_iob_ != "O"
                          else "O" for token in doc])
    gold = [kdata.convert_tags(tags, splits.validation.scheme, "IOB2")
            for tags in splits.validation.tags]
    scores = entity_scores(gold, predicted)
    parameters = sum(int(node.get_param(name).size)
                     for _, component in best.components if hasattr(component, "model")
                     for node in component.model.walk()
                     for name in node.param_names if node.has_param(name))
    result = {"validation": scores, "wall_seconds": round(wall, 1), "steps": SPACY_STEPS,
              "parameters": parameters, "spacy": spacy.__version__}
    _write_json(metrics, result)
    return result


def run_sasrec_anchor(path: Path, out: Path, seed: int = 1) -> dict:
    """A PyTorch SASRec (SASRec.pytorch's MovieLens settings) trained on `path`'s
    leave-one-out split; returns (and keeps, in `out/metrics.json`) both protocols
    on validation and test, and the wall time."""
    metrics = out / "metrics.json"
    if metrics.is_file():
        return json.loads(metrics.read_text(encoding="utf-8"))
    import copy
    import math
    import time

    # Before torch loads its OpenMP runtime (see sasrec_speed.py's docstring).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    from sasrec_speed import TorchTrainer, usable_users
    from zoo.recommender import data as recommender_data
    from zoo.recommender import ranking

    torch.manual_seed(seed)
    torch.set_num_threads(os.cpu_count())
    data = recommender_data.read(path)
    settings = argparse.Namespace(max_length=200, hidden_dim=50, layers=2, heads=1, dropout=0.2,
                                  batch_size=128, learning_rate=1e-3)
    trainer = TorchTrainer(data.split.train, data.num_items, settings)
    steps = math.ceil(usable_users(data.split.train) / settings.batch_size)

    def evaluate(which: str) -> dict:
        evaluation = recommender_data.evaluation_set(data, which)
        return ranking.evaluate_ranking(
            trainer.score_all, evaluation.padded(settings.max_length), evaluation.targets,
            evaluation.histories, data.num_items, evaluation.negatives, batch_size=1024,
            k=recommender_data.K)

    start = time.perf_counter()
    best, history, waited = None, [], 0
    for epoch in range(SASREC_EVERY, math.ceil(SASREC_STEPS / steps) + 1, SASREC_EVERY):
        trainer.run(steps * SASREC_EVERY)
        valid = evaluate("valid")
        history.append({"epoch": epoch, **valid["sampled"]})
        print(f"  SASRec epoch {epoch}: valid NDCG@10 {valid['sampled']['ndcg@10']:.4f}",
              flush=True)
        if best is None or valid["sampled"]["ndcg@10"] > best[1]["sampled"]["ndcg@10"]:
            best, waited = (epoch, valid, copy.deepcopy(trainer.model.state_dict())), 0
        else:
            waited += 1
            if waited >= SASREC_PATIENCE:
                break
    epoch, valid, weights = best
    trainer.model.load_state_dict(weights)
    result = {"valid": valid, "test": evaluate("test"), "best_epoch": epoch,
              "steps_per_epoch": steps, "history": history,
              "wall_seconds": round(time.perf_counter() - start, 1),
              "parameters": sum(p.numel() for p in trainer.model.parameters()),
              "torch": torch.__version__}
    out.mkdir(parents=True, exist_ok=True)
    _write_json(metrics, result)
    return result


def recommender_table(args, work: Path) -> None:
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(sets) - set(RECOMMENDER_SETS))
    if unknown:
        raise SystemExit(f"--sets: expected some of {', '.join(RECOMMENDER_SETS)}; "
                         f"received {', '.join(unknown)}")
    print("test HR@10 / NDCG@10, sampled (100 negatives) and full ranking; "
          "the epoch chosen on validation NDCG@10")
    print(f"{'data set':9} {'who':14} {'sampled':>15} {'full':>15} {'minutes':>8} "
          f"{'parameters':>10}  derived")
    for name in sets:
        path = Path(args.data) / RECOMMENDER_SETS[name]
        ours = run_recipe("recommender", path, work / "runs" / f"recommender-{name}",
                          args.flags.split())
        rows = [("ours", ours["test"], ours["wall_seconds"], ours["parameters"], _derived(ours))]
        if name == "video":
            rows.append(("SASRec (i. 12)", {"sampled": SASREC_VIDEO}, None, None, ""))
        else:
            theirs = run_sasrec_anchor(path, work / "runs" / f"sasrec-{name}")
            rows.append(("SASRec PyTorch", theirs["test"], theirs["wall_seconds"],
                         theirs["parameters"], f"best epoch {theirs['best_epoch']}"))
        for who, test, seconds, parameters, note in rows:
            sampled = f"{test['sampled']['hr@10']:.4f} / {test['sampled']['ndcg@10']:.4f}"
            full = (f"{test['full']['hr@10']:.4f} / {test['full']['ndcg@10']:.4f}"
                    if "full" in test else "-")
            minutes = "-" if seconds is None else f"{seconds / 60:.1f}"
            count = "-" if parameters is None else f"{parameters:,}"
            print(f"{name:9} {who:14} {sampled:>15} {full:>15} {minutes:>8} {count:>10}  {note}",
                  flush=True)


def _derived(metrics: dict) -> str:
    derived = metrics.get("derived", {}).get("derived", {})
    return ", ".join(f"{key} {value}" for key, value in derived.items())


def classifier_table(args, work: Path) -> None:
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    folds = [int(fold) for fold in args.folds.split(",") if fold.strip()]
    print(f"{'data set':16} {'accuracy':>8} {'CNN-rand':>8} {'Kim':>5} {'minutes':>8} "
          f"{'parameters':>10}  derived")
    for label, folder, anchor in classifier_runs(Path(args.data), work, sets, folds):
        out = work / "runs" / f"classifier-{folder.name}"
        metrics = run_recipe("attention-transformer", folder, out, args.flags.split())
        cnn = "-"  # SST-2's anchor is Kim's number on its test sentences, not here
        if folder.name != "sst2":
            cnn_rand = run_cnn_rand(folder, work / "runs" / f"cnn-rand-{folder.name}")
            cnn = f"{100 * cnn_rand['dev']['accuracy']:.2f}"
        print(f"{label:16} {100 * metrics['dev']['accuracy']:8.2f} {cnn:>8} {anchor:5.1f} "
              f"{metrics['wall_seconds'] / 60:8.1f} {metrics['parameters']:10,}  "
              + _derived(metrics), flush=True)


def tagger_table(args, work: Path) -> None:
    sets = [name.strip() for name in args.sets.split(",") if name.strip()]
    unknown = sorted(set(sets) - set(TAGGER_SETS))
    if unknown:
        raise SystemExit(f"--sets: expected some of {', '.join(TAGGER_SETS)}; "
                         f"received {', '.join(unknown)}")
    print(f"{'data set':14} {'F1':>6} {'spaCy F1':>8} {'minutes':>8} {'spaCy min':>9} "
          f"{'parameters':>10} {'spaCy par':>10}  derived")
    for name in sets:
        folder = Path(args.data) / name
        ours = run_recipe("sequence-tagger", folder, work / "runs" / f"tagger-{name}",
                          args.flags.split())
        theirs = run_spacy_ner(folder, work / "runs" / f"spacy-{name}")
        print(f"{name:14} {100 * ours['validation']['overall']['f1']:6.2f} "
              f"{100 * theirs['validation']['overall']['f1']:8.2f} "
              f"{ours['wall_seconds'] / 60:8.1f} {theirs['wall_seconds'] / 60:9.1f} "
              f"{ours['parameters']:10,} {theirs['parameters']:10,}  " + _derived(ours),
              flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("classifier", "tagger", "recommender"),
                        default="classifier")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data"),
                        help="the shared data folder (default: %(default)s)")
    parser.add_argument("--work", default="generalisation_runs",
                        help="where the fold folders and the runs go (default: %(default)s)")
    parser.add_argument("--sets", default=None,
                        help="data sets (default: sst2,mr,subj,mention-types for the classifier, "
                             f"{','.join(TAGGER_SETS)} for the tagger, "
                             f"{','.join(RECOMMENDER_SETS)} for the recommender)")
    parser.add_argument("--folds", default="0", help="folds of MR and SUBJ (default: %(default)s)")
    parser.add_argument("--flags", default="", help="extra recipe flags, e.g. '--seed 2'")
    args = parser.parse_args()
    if args.sets is None:
        args.sets = {"classifier": "sst2,mr,subj,mention-types", "tagger": ",".join(TAGGER_SETS),
                     "recommender": ",".join(RECOMMENDER_SETS)}[args.model]
    console.quiet()  # TensorFlow's start-up lines stay off the table
    from zoo import training

    flags = sorted(flag for flag in training.cpu_flags()
                   if flag in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16"))
    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores, {' '.join(flags)}")
    tables = {"classifier": classifier_table, "tagger": tagger_table,
              "recommender": recommender_table}
    tables[args.model](args, Path(args.work).resolve())


if __name__ == "__main__":
    main()
