"""Training speed: our SASRec (`NextItemRetriever`) ÷ a PyTorch SASRec, seconds per epoch.

Both train on the same training sequences (`kerasattn.data.read_interactions`
+ `leave_one_out` of `--data`, SASRec's split) at SASRec's Amazon settings:
2 blocks, 1 head, width 50, length 50, dropout 0.5, batch 128 users, lr 1e-3.
One epoch is ceil(U / 128) steps, U the users with at least one training
pair (as SASRec.pytorch counts it). All in one process, interleaved: a few
warm-up steps of each (not timed), then `--repeats` rounds, each timing
`--epochs-timed` epochs of every contender in turn:

- PyTorch: SASRec written here from the paper (Kang & McAuley, 2018,
  "Self-Attentive Sequential Recommendation"): item embedding (N + 1, d,
  row 0 padding) × sqrt(d) + learned positions, embedding dropout, causal
  single-head self-attention and a point-wise feed-forward (Linear, ReLU,
  Linear), each as x + Dropout(sublayer(LayerNorm(x))), padding zeroed after
  every block, a final layer norm; the paper's loss (binary cross-entropy of
  the next item against one sampled negative per position), Adam (lr 1e-3,
  betas 0.9 / 0.98). Each step draws 128 random users, as SASRec's sampler
  does; batches and negatives are drawn in-process with `torch.randint`
  (uniform negatives, as ours), which is cheaper than SASRec.pytorch's
  sampler processes: this side is, if anything, faster than the original.
  `torch.set_num_threads(os.cpu_count())`, with `OMP_WAIT_POLICY=PASSIVE`
  unless the environment sets it: on a CPU that other work also loads,
  OpenMP threads spinning at each barrier made PyTorch's steps 5-20 times
  slower here (set `OMP_WAIT_POLICY=ACTIVE` to time its default on an idle
  machine).
- ours: `zoo.recommender.model.NextItemRetriever` on a
  `SequentialRecommenderBackbone` built, compiled and fed as `python -m zoo
  train recommender` does (its AdamW schedule with warmup and clipping, its
  `tf.data` batches from `kerasattn.data.training_sequences`, `model.fit`),
  with `loss="bce"` (the paper's loss: the like-for-like step) and
  `loss="full_softmax"` (the recipe's default); in float32 as PyTorch
  (`--precision mixed_bfloat16` for bfloat16).
  Each with the recipe's length-sorted batches (`sort_by_length`: users of
  like history length batched together, each batch cut to its longest
  history; the same per-position loss, as positions count from the end) and
  with random batches at full length (as PyTorch's), `--batching`.

PyTorch is needed for this benchmark only; it is not a dependency of the
project: install its CPU build (a `torch-*+cpu` wheel) into the environment
by hand, as `pip install torch` or from a local wheel.

    python benchmarks/sasrec_speed.py --data ../shared/data/sasrec/Video.txt
    python benchmarks/sasrec_speed.py --data ... --steps 5   # a quick check

It prints the CPU (model, cores, avx2/avx512/amx flags), the library
versions, and a markdown table: per contender the seconds per epoch (median
over the timed epochs, each one listed), steps, ms per step and the ratio to
PyTorch. A round is one epoch of each contender (`--epochs-timed` of each):
on a 2-core development machine under other load, about 5 minutes for the
default run (the full softmax's epoch is the longest), start-up included.

`--train-to-target` (not run by default; it takes up to `--max-epochs`
PyTorch epochs, tens of minutes or hours on a small CPU) instead trains the
PyTorch SASRec alone, scoring validation (HR@10 / NDCG@10 on the 100
sampled negatives of `zoo.recommender.data.evaluation_set`, the recipe's
numbers) after every epoch until HR@10 has not improved for `--patience`
epochs, and reports the training time (validation excluded) to reach its
best epoch, and to first reach `--target` if given.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
OUR_LOSSES = ("bce", "full_softmax")
BATCHING = ("sorted", "random")


def usable_users(train) -> int:
    return sum(1 for sequence in train if len(sequence) >= 2)


# -- PyTorch SASRec -----------------------------------------------------------------


def torch_sasrec(num_items: int, length: int, dim: int, blocks: int, heads: int,
                 dropout: float):
    """The paper's SASRec as a `torch.nn.Module`: item ids (B, L) -> states (B, L, d)."""
    import torch
    from torch import nn

    class Block(nn.Module):
        """x + Dropout(SA(LN(x))), then x + Dropout(FFN(LN(x))), padding zeroed."""

        def __init__(self):
            super().__init__()
            self.attention_norm = nn.LayerNorm(dim, eps=1e-8)
            self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.feed_forward_norm = nn.LayerNorm(dim, eps=1e-8)
            self.feed_forward = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(),
                                              nn.Linear(dim, dim))
            self.dropout = nn.Dropout(dropout)

        def forward(self, x, causal_mask, keep):
            h = self.attention_norm(x)
            h, _ = self.attention(h, h, h, attn_mask=causal_mask, need_weights=False)
            x = x + self.dropout(h)
            x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))
            return x * keep

    class SASRec(nn.Module):
        def __init__(self):
            super().__init__()
            self.item_embedding = nn.Embedding(num_items + 1, dim, padding_idx=0)
            nn.init.normal_(self.item_embedding.weight, std=dim**-0.5)
            with torch.no_grad():
                self.item_embedding.weight[0].zero_()
            self.position_embedding = nn.Embedding(length, dim)
            self.embedding_dropout = nn.Dropout(dropout)
            self.blocks = nn.ModuleList(Block() for _ in range(blocks))
            self.output_norm = nn.LayerNorm(dim, eps=1e-8)
            # True above the diagonal: a position never attends to later ones.
            self.register_buffer("causal_mask",
                                 torch.triu(torch.ones(length, length, dtype=torch.bool), 1),
                                 persistent=False)
            self.register_buffer("positions", torch.arange(length), persistent=False)

        def forward(self, item_ids):
            keep = (item_ids > 0).unsqueeze(-1).to(torch.float32)
            x = self.item_embedding(item_ids) * dim**0.5 + self.position_embedding(self.positions)
            x = self.embedding_dropout(x) * keep
            for block in self.blocks:
                x = block(x, self.causal_mask, keep)
            return self.output_norm(x)

        def loss(self, item_ids, positives):
            """The paper's loss: BCE of the next item and one uniform negative per position."""
            states = self(item_ids)
            negatives = torch.randint(1, num_items + 1, positives.shape)
            table = self.item_embedding
            positive_logits = (states * table(positives)).sum(-1)
            negative_logits = (states * table(negatives)).sum(-1)
            mask = positives > 0
            losses = (nn.functional.softplus(-positive_logits)
                      + nn.functional.softplus(negative_logits))
            return losses[mask].mean()

    return SASRec()


class TorchTrainer:
    """SASRec.pytorch's loop: each step 128 random users (with replacement), Adam."""

    def __init__(self, train, num_items: int, args):
        import torch

        from kerasattn import data as kdata

        usable = [sequence for sequence in train if len(sequence) >= 2]
        self.inputs = torch.from_numpy(kdata.pad_histories([s[:-1] for s in usable],
                                                           args.max_length).astype("int64"))
        self.positives = torch.from_numpy(kdata.pad_histories([s[1:] for s in usable],
                                                              args.max_length).astype("int64"))
        self.batch_size = args.batch_size
        self.model = torch_sasrec(num_items, args.max_length, args.hidden_dim, args.layers,
                                  args.heads, args.dropout)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=args.learning_rate,
                                          betas=(0.9, 0.98))

    def run(self, steps: int) -> float:
        """Trains `steps` steps; returns the last loss."""
        import torch

        self.model.train()
        loss = None
        for _ in range(steps):
            users = torch.randint(0, len(self.inputs), (self.batch_size,))
            loss = self.model.loss(self.inputs[users], self.positives[users])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def score_all(self, histories):
        """Scores `(B, N + 1)` of the last position's state against every item."""
        import torch

        self.model.eval()
        with torch.no_grad():
            states = self.model(torch.from_numpy(histories.astype("int64")))[:, -1]
            return (states @ self.model.item_embedding.weight.T).numpy()


# -- ours ----------------------------------------------------------------------------


def epoch_timer():
    """A Keras callback keeping each epoch's wall time in `seconds`."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []
            self._start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._start)

    return EpochTimer()


class OurTrainer:
    """The recipe's retrieval task and batches (`zoo.recommender.train.run`), one loss."""

    def __init__(self, data, loss: str, batching: str, policy: str, args):
        from zoo import training
        from zoo.recommender import data as recommender_data
        from zoo.recommender.model import NextItemRetriever
        from zoo.recommender.model import SequentialRecommenderBackbone
        from zoo.recommender.preprocessor import RecommenderPreprocessor

        preprocessor = RecommenderPreprocessor(data.interactions.item_ids,
                                               sequence_length=args.max_length)
        backbone = SequentialRecommenderBackbone(
            num_items=data.num_items, max_sequence_length=args.max_length,
            hidden_dim=args.hidden_dim, num_layers=args.layers, num_heads=args.heads,
            dropout=args.dropout, dtype=policy,
        )
        self.model = NextItemRetriever(backbone, preprocessor, loss=loss, seed=args.seed)
        self.batches, self.steps = recommender_data.retrieval_batches(
            data, args.max_length, args.batch_size, args.seed,
            sort_by_length=batching == "sorted")
        # The recipe's defaults: 200 epochs, 100 warmup steps, no weight decay.
        optimizer = training.optimizer(args.learning_rate, self.steps * 200, 100, 0.0)
        if policy == "mixed_float16":
            import keras

            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        self.model.compile(optimizer=optimizer)

    def run(self, steps: int, epochs: int = 1) -> list[float]:
        """`model.fit` for `epochs` epochs of `steps` steps; returns each epoch's seconds."""
        times = epoch_timer()
        self.model.fit(self.batches, epochs=epochs, steps_per_epoch=steps, callbacks=[times],
                       verbose=0)
        return times.seconds


# -- the benchmark ---------------------------------------------------------------------


def versions() -> str:
    import keras
    import numpy
    import tensorflow as tf
    import torch

    return (f"Python {platform.python_version()}, tensorflow {tf.__version__}, keras "
            f"{keras.__version__}, torch {torch.__version__}, numpy {numpy.__version__}")


def machine() -> str:
    from zoo import training

    flags = training.cpu_flags()
    present = [flag for flag in FLAGS if flag in flags] or ["none of " + "/".join(FLAGS)]
    return f"CPU: {training.cpu_name()}, {os.cpu_count()} cores; flags: {' '.join(present)}"


def load() -> str:
    """The 1-minute load average, and a warning where other work competes for the cores."""
    try:
        average = os.getloadavg()[0]
    except OSError:
        return "load average unknown"
    busy = average > 0.5 * (os.cpu_count() or 1)
    return f"load average {average:.1f}" + (" (other work is running: timings are noisy)"
                                            if busy else "")


def speed(args, data) -> None:
    import torch

    from zoo import training

    before = load()
    policy = training.dtype_policy(args.precision)
    users = usable_users(data.split.train)
    full_steps = math.ceil(users / args.batch_size)
    steps = min(full_steps, args.steps) if args.steps else full_steps
    torch.manual_seed(args.seed)
    pytorch = TorchTrainer(data.split.train, data.num_items, args)
    ours = {(loss, batching): OurTrainer(data, loss, batching, policy, args)
            for loss in args.losses for batching in args.batching}
    # Warm-up: traces, first allocations, thread pools; not timed.
    pytorch.run(args.warmup)
    for trainer in ours.values():
        trainer.run(args.warmup)
    times = {"pytorch": [], **{key: [] for key in ours}}
    for _ in range(args.repeats):
        for _ in range(args.epochs_timed):
            start = time.perf_counter()
            pytorch.run(steps)
            times["pytorch"].append(time.perf_counter() - start)
        for key, trainer in ours.items():
            times[key].extend(trainer.run(steps, args.epochs_timed))

    print(machine())
    print(versions() + f"; torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}")
    print(f"before: {before}; after: {load()}")
    print(f"{args.data}: {data.interactions.num_users} users ({users} with a training pair), "
          f"{data.num_items} items; {args.layers} blocks × {args.hidden_dim} dims, "
          f"{args.heads} head, length {args.max_length}, batch {args.batch_size}, dropout "
          f"{args.dropout}; ours in {policy}")
    note = "" if steps == full_steps else f" (--steps: {full_steps} in a full epoch)"
    print(f"{steps} steps an epoch{note}; {args.warmup} warm-up steps each; "
          f"{args.repeats} round(s) × {args.epochs_timed} epoch(s) each, interleaved; median")
    print()
    print("| framework / loss | seconds / epoch | epochs timed (s) | steps | ms / step | "
          "ours ÷ PyTorch |")
    print("|---|---|---|---|---|---|")
    reference = statistics.median(times["pytorch"])
    rows = [("PyTorch SASRec (paper), bce", "pytorch")]
    rows += [(f"ours (NextItemRetriever), {loss}, {batching} batches", (loss, batching))
             for loss, batching in ours]
    for name, key in rows:
        seconds = statistics.median(times[key])
        each = ", ".join(f"{value:.2f}" for value in times[key])
        ratio = "1" if key == "pytorch" else f"{seconds / reference:.2f}"
        print(f"| {name} | {seconds:.2f} | {each} | {steps} | {1000 * seconds / steps:.1f} | "
              f"{ratio} |")


def train_to_target(args, data) -> None:
    import torch

    from zoo.recommender import data as recommender_data
    from zoo.recommender import ranking

    torch.manual_seed(args.seed)
    steps = math.ceil(usable_users(data.split.train) / args.batch_size)
    steps = min(steps, args.steps) if args.steps else steps
    pytorch = TorchTrainer(data.split.train, data.num_items, args)
    validation = recommender_data.evaluation_set(data, "valid")
    histories = validation.padded(args.max_length)
    print(machine())
    print(versions() + f"; torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY')}; {load()}")
    print(f"PyTorch SASRec to its best validation HR@10 (100 sampled negatives), "
          f"{steps} steps an epoch, patience {args.patience} epochs")
    print("| epoch | training s (total) | loss | HR@10 | NDCG@10 | full HR@10 |")
    print("|---|---|---|---|---|---|")
    trained = 0.0
    best = (-1.0, 0, 0.0, None)  # HR@10, epoch, seconds, results
    reached = None
    for epoch in range(1, args.max_epochs + 1):
        start = time.perf_counter()
        loss = pytorch.run(steps)
        trained += time.perf_counter() - start
        results = ranking.evaluate_ranking(
            pytorch.score_all, histories, validation.targets, validation.histories,
            data.num_items, validation.negatives, batch_size=1024, k=recommender_data.K)
        hr = results["sampled"]["hr@10"]
        print(f"| {epoch} | {trained:.1f} | {loss:.4f} | {hr:.4f} | "
              f"{results['sampled']['ndcg@10']:.4f} | {results['full']['hr@10']:.4f} |",
              flush=True)
        if args.target is not None and reached is None and hr >= args.target:
            reached = (epoch, trained)
        if hr > best[0]:
            best = (hr, epoch, trained, results)
        elif epoch - best[1] >= args.patience:
            break
    hr, epoch, seconds, results = best
    print(f"best: epoch {epoch}, HR@10 {hr:.4f}, NDCG@10 {results['sampled']['ndcg@10']:.4f} "
          f"after {seconds:.1f} s of training ({seconds / epoch:.2f} s an epoch)")
    if args.target is not None:
        print(f"target HR@10 {args.target}: " + (
            f"reached at epoch {reached[0]} after {reached[1]:.1f} s of training"
            if reached else "not reached"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.normpath(
                            os.path.join(REPO, "..", "shared", "data", "sasrec", "Video.txt")),
                        help="a SASRec-format file (default: ../shared/data/sasrec/Video.txt)")
    parser.add_argument("--epochs-timed", type=int, default=1,
                        help="epochs timed of each contender per round (default: 1)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds (default: 1)")
    parser.add_argument("--steps", type=int, default=None,
                        help="limit the steps of an epoch (a quick check)")
    parser.add_argument("--warmup", type=int, default=10,
                        help="untimed warm-up steps of each (default: 10)")
    parser.add_argument("--losses", nargs="+", choices=OUR_LOSSES, default=list(OUR_LOSSES),
                        help="our losses to time (default: bce full_softmax)")
    parser.add_argument("--batching", nargs="+", choices=BATCHING, default=list(BATCHING),
                        help="our batches: length-sorted (the recipe's) and/or random at full "
                             "length (default: both)")
    parser.add_argument("--precision", default="float32",
                        choices=("auto", "float32", "mixed_bfloat16", "mixed_float16"),
                        help="our dtype policy (default: float32, as PyTorch; the recipe's "
                             "default is auto)")
    parser.add_argument("--max-length", type=int, default=50)
    parser.add_argument("--hidden-dim", type=int, default=50)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--train-to-target", action="store_true",
                        help="train the PyTorch SASRec until validation HR@10 stops improving "
                             "and report its time (long; not run by default)")
    parser.add_argument("--max-epochs", type=int, default=200)
    parser.add_argument("--patience", type=int, default=20)
    parser.add_argument("--target", type=float, default=None,
                        help="with --train-to-target: also report when HR@10 first reaches this")
    args = parser.parse_args()
    for name in ("epochs_timed", "repeats", "warmup", "max_length", "hidden_dim", "layers",
                 "heads", "batch_size", "max_epochs", "patience"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if args.steps is not None and args.steps <= 0:
        parser.error("--steps must be > 0")
    # Before torch loads its OpenMP runtime (see the module's docstring).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import torch
    except ImportError:
        print("sasrec_speed: PyTorch is not installed; this benchmark needs it (pip install "
              "torch, CPU build); it is not a dependency of the project", file=sys.stderr)
        return 1
    torch.set_num_threads(os.cpu_count())
    console.quiet()

    import keras

    from kerasattn import data as kdata
    from zoo.recommender.data import RecommenderData

    keras.utils.set_random_seed(args.seed)
    interactions = kdata.read_interactions(args.data)
    data = RecommenderData(interactions, kdata.leave_one_out(interactions))
    if args.train_to_target:
        train_to_target(args, data)
    else:
        speed(args, data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
