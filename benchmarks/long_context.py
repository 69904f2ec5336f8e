"""Long-context attention: kerasattn.layers.MultiHeadAttention ÷ keras.layers.MultiHeadAttention.

For each sequence length (128 up to 32,768 tokens, batch 1, 8 heads of 64 by
default) and for the forward pass and forward + backward (a plain eager
`tf.GradientTape`, static lengths), it prints:

- time: medians of interleaved runs of Keras's layer and ours (our default
  `implementation="auto"`, and `"chunked"`), all in one process with the
  same weights and inputs, and the ratio ours ÷ Keras (at least `--repeats`
  runs, and as many as fill `--min-seconds` for short steps);
- peak memory: each (layer, pass, length) measured alone in a fresh
  subprocess (one step, no warm-up), so that cases do not contaminate each
  other: the peak bytes held in TensorFlow tensors during the step
  (TensorFlow's CPU allocator statistics), the growth of the process's peak
  resident set (`getrusage` maxrss) over its size before the step, and that
  peak itself (TensorFlow's own footprint included);
- GFLOP/s of the step (projections plus attention, counting the chunked
  backward's recomputation of the scores) ÷ the GFLOP/s of a large float32
  `tf.matmul` measured in the same run.

Keras's layer is skipped (with a note) where its score tensors would not fit
in memory. The CPU model and flags come from /proc/cpuinfo.

    python benchmarks/long_context.py                     # 128 ... 32,768
    python benchmarks/long_context.py --max-length 1024   # a quick check

Ratios below 1 mean ours is faster or smaller. Needs a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Makes tf.config.experimental.get_memory_info("CPU:0") count tensor bytes;
# it must be set before TensorFlow is imported.
os.environ["TF_CPU_ALLOCATOR_COLLECT_STATS"] = "1"

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("forward", "forward+backward")
LAYERS = ("keras", "auto", "chunked")
# Keras's layer keeps about this many (B, N, T, T) float32 tensors alive at
# its peak (scores, softmax, and in the backward pass their gradients).
KERAS_SCORE_TENSORS = {"forward": 3, "forward+backward": 5}


# -- one case in a child process ----------------------------------------------


def _build(name: str, heads: int, key_dim: int, width: int, block_size: int):
    import keras

    from kerasattn.layers import MultiHeadAttention

    keras.utils.set_random_seed(0)
    reference = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim)
    small = keras.ops.zeros((1, 4, width))
    reference(small, small)
    if name == "keras":
        return reference
    ours = MultiHeadAttention(
        num_heads=heads, key_dim=key_dim, implementation=name, block_size=block_size
    )
    ours(small, small)
    ours.set_weights(reference.get_weights())
    return ours


def _step(layer, mode: str, causal: bool):
    import tensorflow as tf

    def forward(x):
        return layer(x, x, use_causal_mask=causal).numpy()

    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x, use_causal_mask=causal))
        grads = tape.gradient(loss, [x] + layer.trainable_variables)
        return [g.numpy() for g in grads]

    return forward if mode == "forward" else forward_backward


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def child_memory(args) -> None:
    """Peak memory of one warmed-up step of one layer (prints JSON)."""
    import numpy as np
    import tensorflow as tf

    layer = _build(args.layer, args.heads, args.key_dim, args.heads * args.key_dim, args.block_size)
    x = tf.constant(
        np.random.default_rng(0).normal(size=(args.batch, args.length, args.heads * args.key_dim)),
        tf.float32,
    )
    step = _step(layer, args.mode, args.causal)
    if args.warm_up:
        step(x)
    rss_before = _rss_bytes()
    tf.config.experimental.reset_memory_stats("CPU:0")
    tensors_before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x)
    tensor_peak = tf.config.experimental.get_memory_info("CPU:0")["peak"] - tensors_before
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps(dict(
        tensor_peak=tensor_peak, rss_growth=max(max_rss - rss_before, 0), max_rss=max_rss,
    )))


def child_time(args) -> None:
    """Interleaved step times of the layers and a matmul's GFLOP/s (JSON)."""
    import numpy as np
    import tensorflow as tf

    names = args.layers.split(",")
    width = args.heads * args.key_dim
    layers = {n: _build(n, args.heads, args.key_dim, width, args.block_size) for n in names}
    x = tf.constant(
        np.random.default_rng(0).normal(size=(args.batch, args.length, width)), tf.float32
    )
    outputs = {n: layers[n](x, x, use_causal_mask=args.causal).numpy() for n in names}
    difference = {
        n: float(np.max(np.abs(outputs[n] - outputs[names[0]]))) for n in names
    }
    times = {}
    for mode in MODES:
        steps = {n: _step(layers[n], mode, args.causal) for n in names}
        slowest = 0.0
        if args.warm_up:
            for step in steps.values():  # warm-up (traces, allocations)
                slowest = max(slowest, _timed(lambda: step(x)))
        # Short steps are repeated for at least --min-seconds a layer: their
        # eager times scatter by several percent from call to call.
        repeats = max(args.repeats, math.ceil(args.min_seconds / max(slowest, 1e-6)))
        samples = {n: [] for n in names}
        for _ in range(repeats):
            for n, step in steps.items():
                started = time.perf_counter()
                step(x)
                samples[n].append(time.perf_counter() - started)
        times[mode] = {n: statistics.median(s) for n, s in samples.items()}
    print(json.dumps(dict(times=times, difference=difference, matmul_gflops=_matmul_gflops())))


def _matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()
    best = min(_timed(lambda: tf.matmul(a, b).numpy()) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


# -- the parent ---------------------------------------------------------------


def step_flops(
    length: int, batch: int, heads: int, key_dim: int, mode: str, chunked: bool, causal: bool
) -> float:
    """Multiply-adds × 2 of one step: four projections and the attention.

    Forward: q kᵀ and p v. Backward: twice the forward's products, plus (in
    the chunked path) q kᵀ once more to recompute the probabilities.
    Causal attention is counted as full (neither path skips masked blocks).
    """
    del causal
    width = heads * key_dim
    projections = 4 * 2 * batch * length * width * width
    attention = 2 * 2 * batch * heads * length * length * key_dim
    if mode == "forward":
        return projections + attention
    backward_attention = 2 * attention + (attention / 2 if chunked else 0)
    return 3 * projections + attention + backward_attention


def cpu_description() -> str:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                generic = ("", platform.machine(), platform.processor())
                if line.startswith("model name") and model in generic:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    simd = [f for f in flags if f.startswith(("avx", "amx", "fma", "sse4", "f16c"))]
    return f"{model}; SIMD flags: {' '.join(simd) or 'unknown'}"


def available_bytes() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def run_child(kind: str, args, **extra) -> dict:
    command = [sys.executable, os.path.abspath(__file__), f"--child-{kind}"]
    options = dict(
        length=args.length_now, batch=args.batch, heads=args.heads, key_dim=args.key_dim,
        block_size=args.block_size, repeats=args.repeats_now,
        min_seconds=args.min_seconds, **extra,
    )
    for key, value in options.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    if args.causal:
        command.append("--causal")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["killed"])[-1][:120]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-length", type=int, default=128)
    parser.add_argument("--max-length", type=int, default=32768)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--key-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--repeats", type=int, default=5,
                        help="timed runs per layer up to 2,048 tokens (fewer beyond)")
    parser.add_argument("--min-seconds", type=float, default=2.0,
                        help="time each layer's short steps for at least this long")
    parser.add_argument("--memory-fraction", type=float, default=0.6,
                        help="skip Keras where its score tensors would exceed this share of "
                        "free memory")
    # Internal: one case in a child process.
    parser.add_argument("--child-memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-time", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--length", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--layer", help=argparse.SUPPRESS)
    parser.add_argument("--layers", help=argparse.SUPPRESS)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--warm-up", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_memory:
        return child_memory(args)
    if args.child_time:
        return child_time(args)

    import keras
    import tensorflow as tf

    print(f"# CPU: {cpu_description()}; {os.cpu_count()} cores visible")
    print(
        f"# python {platform.python_version()}, tensorflow {tf.__version__}, "
        f"keras {keras.__version__}; "
        f"float32, batch {args.batch}, {args.heads} heads x {args.key_dim}, causal={args.causal}, "
        f"block_size={args.block_size}; eager GradientTape, static lengths"
    )
    print("# time: median of interleaved runs in one process; memory: one step per fresh process")
    header = (
        "| length | pass | ours | keras ms | ours ms | time ratio | keras tensor peak MiB "
        "| ours tensor peak MiB | tensor memory ratio | keras RSS growth MiB | ours RSS growth MiB "
        "| ours max RSS MiB | ours GFLOP/s | ÷ matmul GFLOP/s | max abs diff |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    notes = []
    length = args.min_length
    free = available_bytes()
    while length <= args.max_length:
        args.length_now = length
        if length <= 2048:
            args.repeats_now = args.repeats
        else:
            args.repeats_now = max(1, args.repeats // 2) if length <= 4096 else 1
        score_bytes = 4 * args.batch * args.heads * length * length
        keras_fits = {
            mode: KERAS_SCORE_TENSORS[mode] * score_bytes <= args.memory_fraction * free
            for mode in MODES
        }
        # Where "auto" is the chunked path, "chunked" is not run again.
        auto_is_chunked = _is_chunked("auto", args, length)
        names = [
            n for n in LAYERS
            if (n != "keras" or keras_fits["forward+backward"])
            and not (n == "chunked" and auto_is_chunked)
        ]
        # The longest steps (minutes each on a CPU) are timed without warm-up.
        warm_up = int(length <= 8192)
        timing = run_child("time", args, layers=",".join(names), warm_up=warm_up)
        for mode in MODES:
            memory = {}
            for name in names:
                if name == "keras" and not keras_fits[mode]:
                    continue
                # No warm-up step: the process's peak RSS is then this step's.
                memory[name] = run_child("memory", args, layer=name, mode=mode, warm_up=0)
            for name in ("auto", "chunked"):
                measured = "auto" if name == "chunked" and auto_is_chunked else name
                times = timing.get("times", {}).get(mode, {})
                ours_t, keras_t = times.get(measured), times.get("keras")
                mine, theirs = memory.get(measured, {}), memory.get("keras", {})
                flops = step_flops(length, args.batch, args.heads, args.key_dim, mode,
                                   chunked=_is_chunked(name, args, length), causal=args.causal)
                gflops = flops / ours_t / 1e9 if ours_t else None
                matmul = timing.get("matmul_gflops")
                cells = [
                    length, mode, name,
                    _fmt(keras_t and keras_t * 1e3), _fmt(ours_t and ours_t * 1e3),
                    _ratio(ours_t, keras_t),
                    _mib(theirs.get("tensor_peak")), _mib(mine.get("tensor_peak")),
                    _ratio(mine.get("tensor_peak"), theirs.get("tensor_peak")),
                    _mib(theirs.get("rss_growth")), _mib(mine.get("rss_growth")),
                    _mib(mine.get("max_rss")),
                    _fmt(gflops), _ratio(gflops, matmul),
                    _fmt(timing.get("difference", {}).get(measured), "{:.1e}"),
                ]
                print("| " + " | ".join(str(c) for c in cells) + " |", flush=True)
            for name, result in memory.items():
                if "error" in result:
                    notes.append(f"{length} {mode} {name}: {result['error']}")
        if "error" in timing:
            notes.append(f"{length} timing: {timing['error']}")
        if not keras_fits["forward+backward"]:
            notes.append(
                f"{length}: Keras skipped "
                f"({'forward+backward' if keras_fits['forward'] else 'both passes'}): "
                f"its (B, N, T, T) score tensors need about "
                f"{KERAS_SCORE_TENSORS['forward+backward'] * score_bytes / 2**30:.0f} GiB, "
                f"{free / 2**30:.0f} GiB free"
            )
        length *= 2
    for note in notes:
        print(f"# note: {note}")
    print("# matmul: float32 2048x2048 tf.matmul, best of 5, in each timing process")


def _is_chunked(name: str, args, length: int) -> bool:
    if name == "chunked":
        return True
    from kerasattn.ops import attention

    score_bytes = 4 * args.batch * args.heads * length * length
    return score_bytes >= attention.AUTO_CHUNKED_MIN_SCORE_BYTES


def _fmt(value, pattern: str = "{:.1f}") -> str:
    return "—" if value is None else pattern.format(value)


def _mib(value) -> str:
    return "—" if value is None else f"{value / 2**20:.0f}"


def _ratio(a, b) -> str:
    return "—" if not a or not b else f"{a / b:.2f}"


if __name__ == "__main__":
    main()
