"""kerasattn.layers.MultiHeadAttention ÷ keras.layers.MultiHeadAttention.

For each (batch, length, heads, width) case it prints the ratio of our
layer's median time to Keras's, for the forward pass and for forward +
backward, both measured in this process with the same weights and inputs,
interleaved so that drift in the machine's speed hits both alike; and the
ratio of peak memory, each measured in a fresh child process as how far one
warmed-up step raises the peak resident set size (Linux only).

    python benchmarks/attention_layers.py            # the recorded cases
    python benchmarks/attention_layers.py --quick    # one small case

Ratios below 1 mean ours is faster or smaller.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (batch, length, heads, width, causal)
CASES = [
    (16, 128, 8, 256, False),
    (8, 512, 8, 512, False),
    (8, 512, 8, 512, True),
    (2, 2048, 8, 512, False),
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
    medians = {}
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
    return medians, difference


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_memory_worker(implementation, mode, batch, length, heads, width, causal) -> None:
    """Child process: prints how far one step raises the resident set (bytes).

    The step runs once at full size first, so that tracing and the thread
    pools and kernel caches of a first execution are not counted; freed heap
    is returned to the system and the peak (VmHWM) is reset before the
    measured run.
    """
    import ctypes

    import numpy as np

    layer = make_layers(heads, width)[implementation]
    step = make_steps(layer, width, causal)[mode]
    x = np.random.default_rng(0).normal(size=(batch, length, width)).astype("float32")
    step(x)
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # resets VmHWM to the current resident size
    resident = _status_kib("VmRSS")
    step(x)
    print(json.dumps({"peak_growth": (_status_kib("VmHWM") - resident) * 1024}))


def peak_memory(implementation, mode, case) -> int:
    command = [sys.executable, __file__, "--worker", implementation, mode] + [str(v) for v in case]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_growth"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one small case, few repeats")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        implementation, mode, *numbers = args.worker
        *sizes, causal = numbers
        peak_memory_worker(implementation, mode, *map(int, sizes), causal == "True")
        return

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
        "| batch | length | heads | width | causal | mode | ours | max abs diff | keras ms | ours ms "
        "| time ratio | keras peak MB | ours peak MB | memory ratio |"
    )
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for case in cases:
        medians, difference = time_case(*case, repeats=repeats)
        for mode, by_name in medians.items():
            keras_memory = peak_memory("keras", mode, case)
            for implementation in OURS:
                name = f"kerasattn/{implementation}"
                memory = peak_memory(name, mode, case)
                print(
                    "| " + " | ".join(str(v) for v in case) + f" | {mode} | {implementation} | {difference[name]:.1e} "
                    f"| {by_name['keras'] * 1e3:.1f} | {by_name[name] * 1e3:.1f} "
                    f"| {by_name[name] / by_name['keras']:.2f} | {keras_memory / 2**20:.1f} "
                    f"| {memory / 2**20:.1f} | {memory / max(keras_memory, 1):.2f} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
