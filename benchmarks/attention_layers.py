"""kerasattn.layers.MultiHeadAttention ÷ keras.layers.MultiHeadAttention.

For each (batch, length, heads, width) case it prints the ratio of our
layer's median time to Keras's, for the forward pass and for forward +
backward, both measured in this process with the same weights and inputs,
interleaved so that drift in the machine's speed hits both alike; and the
ratio of peak memory: the peak bytes held in TensorFlow tensors during one
warmed-up step, from TensorFlow's CPU allocator statistics.

    python benchmarks/attention_layers.py            # the recorded cases
    python benchmarks/attention_layers.py --quick    # one small case

Ratios below 1 mean ours is faster or smaller.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Makes tf.config.experimental.get_memory_info("CPU:0") count tensor bytes;
# it must be set before TensorFlow is imported.
os.environ["TF_CPU_ALLOCATOR_COLLECT_STATS"] = "1"

# (batch, length, heads, width, causal)
CASES = [
    (16, 128, 8, 256, False),
    (8, 512, 8, 512, False),
    (8, 512, 8, 512, True),
    (2, 2048, 8, 512, False),
    (1, 4096, 8, 512, False),
]
QUICK_CASES = [(4, 64, 4, 64, False)]
# Our implementations measured against Keras: "auto" is the default (dense
# for these traced-with-any-length steps); "chunked" trades time for memory.
OURS = ("auto", "chunked")


def make_layers(heads: int, width: int):
    import keras

    from kerasattn.layers import MultiHeadAttention

    key_dim = width // heads
    theirs = keras.layers.MultiHeadAttention(num_heads=heads, key_dim=key_dim)
    layers = {"keras": theirs}
    shape = (None, None, width)
    theirs.build(shape, shape)
    for implementation in OURS:
        ours = MultiHeadAttention(
            num_heads=heads, key_dim=key_dim, implementation=implementation
        )
        ours.build(shape, shape)
        ours.set_weights(theirs.get_weights())
        layers[f"kerasattn/{implementation}"] = ours
    return layers


def make_steps(layer, width: int, causal: bool):
    """tf.functions for forward and forward+backward, traced for any B and T."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, None, width), tf.float32)

    @tf.function(input_signature=[spec])
    def forward(x):
        return layer(x, x, use_causal_mask=causal)

    @tf.function(input_signature=[spec])
    def forward_backward(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, x, use_causal_mask=causal))
        return tape.gradient(loss, [x] + layer.trainable_variables)

    return {"forward": forward, "forward+backward": forward_backward}


def time_case(batch, length, heads, width, causal, repeats):
    import numpy as np

    x = np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")
    layers = make_layers(heads, width)
    steps = {name: make_steps(layer, width, causal) for name, layer in layers.items()}
    # Same answer first: a ratio of two different computations means nothing.
    outputs = {name: s["forward"](x).numpy() for name, s in steps.items()}
    difference = {
        name: float(np.max(np.abs(outputs["keras"] - out))) for name, out in outputs.items()
    }
    medians, memory = {}, {}
    for mode in ("forward", "forward+backward"):
        times = {name: [] for name in steps}
        for name in steps:  # warm-up
            steps[name][mode](x)
        for _ in range(repeats):
            for name in steps:
                started = time.perf_counter()
                result = steps[name][mode](x)
                _ = [r.numpy() for r in result] if isinstance(result, list) else result.numpy()
                times[name].append(time.perf_counter() - started)
        medians[mode] = {name: statistics.median(t) for name, t in times.items()}
        memory[mode] = {name: peak_memory(steps[name][mode], x) for name in steps}
    return medians, memory, difference


def peak_memory(step, x) -> int:
    """Peak tensor bytes allocated during one (already warmed-up) step."""
    import tensorflow as tf

    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    step(x)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, few repeats")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    cases = QUICK_CASES if args.quick else CASES
    repeats = 3 if args.quick else args.repeats
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"tensorflow {tf.__version__}, keras {keras.__version__}, float32, "
        f"median of {repeats}"
    )
    header = (
        "| batch | length | heads | width | causal | mode | ours | max abs diff | keras ms | ours "
        "ms | time ratio | keras peak MB | ours peak MB | memory ratio |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in cases:
        medians, memories, difference = time_case(*case, repeats=repeats)
        for mode, by_name in medians.items():
            keras_memory = memories[mode]["keras"]
            for implementation in OURS:
                name = f"kerasattn/{implementation}"
                memory = memories[mode][name]
                print(
                    "| "
                    + " | ".join(str(v) for v in case)
                    + f" | {mode} | {implementation} | {difference[name]:.1e} "
                    f"| {by_name['keras'] * 1e3:.1f} | {by_name[name] * 1e3:.1f} "
                    f"| {by_name[name] / by_name['keras']:.2f} | {keras_memory / 2**20:.1f} "
                    f"| {memory / 2**20:.1f} | {memory / max(keras_memory, 1):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
