"""Where a .tflite file spends its time: the LiteRT latency of the graph cut after op k.

The LiteRT interpreter of the `ai_edge_litert` wheel has no per-op profiler, so this
times prefixes of the graph instead: for `--points` cut points k it writes a copy of the
file whose graph ends after op k (the ops after it removed, op k's first output made the
graph's output) and times it like `benchmarks/tflite_latency.py` does (one thread,
XNNPACK, batch 1; median over interleaved rounds). The difference between consecutive
cuts is what the ops between them cost, delegate partition boundaries included. Each
row names the op at the cut and its output tensor, which carries the layer's name.

    python benchmarks/tflite_op_profile.py model_float32.tflite --length 64 --points 40

Inputs are random: integer inputs draw ids in [1, --max-id), boolean inputs are all
True (no padding), float inputs are standard normal; dynamic axes other than the batch
take `--length`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zoo import console  # noqa: E402  (quiet TensorFlow before it loads)


def prefix(content: bytes, end: int) -> bytes:
    """The model with its first subgraph cut after op `end - 1`."""
    import flatbuffers
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    graph = model.subgraphs[0]
    graph.operators = graph.operators[:end]
    graph.outputs = [next(t for t in graph.operators[-1].outputs if t >= 0)]
    model.signatureDefs = []  # they name the removed outputs
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def timer(content: bytes, length: int, max_id: int):
    """A function timing `runs` calls of the model (median ms per call, as
    `kerasattn.export` times its files) on fixed random inputs."""
    from ai_edge_litert.interpreter import Interpreter

    from kerasattn.export._runtimes import median_latency_ms

    interpreter = Interpreter(model_content=content, num_threads=1)
    rng = np.random.default_rng(0)
    feeds = []
    for detail in interpreter.get_input_details():
        signature = detail.get("shape_signature", detail["shape"])
        shape = [1] + [length if d < 0 else int(d) for d in signature[1:]]
        interpreter.resize_tensor_input(detail["index"], shape)
        dtype = np.dtype(detail["dtype"])
        if dtype == np.bool_:
            value = np.ones(shape, bool)
        elif np.issubdtype(dtype, np.integer):
            value = rng.integers(1, max_id, shape).astype(dtype)
        else:
            value = rng.normal(size=shape).astype(dtype)
        feeds.append((detail["index"], value))
    interpreter.allocate_tensors()

    def time_ms(runs: int) -> float:
        for index, value in feeds:
            interpreter.set_tensor(index, value)
        return median_latency_ms(interpreter.invoke, runs)

    return time_ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument("--length", type=int, default=64, help="size of dynamic axes")
    parser.add_argument("--points", type=int, default=30, help="cut points")
    parser.add_argument("--runs", type=int, default=200, help="calls per timing")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (median)")
    parser.add_argument("--max-id", type=int, default=100, help="integer inputs are < this")
    args = parser.parse_args()
    for name in ("length", "points", "runs", "rounds", "max_id"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0")
    if not os.path.isfile(args.model):
        parser.error(f"no such file: {args.model}")
    console.quiet()
    from tensorflow.lite.python import schema_py_generated as schema

    with open(args.model, "rb") as file:
        content = file.read()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(content, 0))
    graph = model.subgraphs[0]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    count = len(graph.operators)
    cuts = sorted({int(round(k)) for k in np.linspace(1, count, min(args.points, count))})
    timers = {end: timer(prefix(content, end), args.length, args.max_id) for end in cuts}
    samples = {end: [] for end in cuts}
    for _ in range(args.rounds):
        for end, time_ms in timers.items():
            samples[end].append(time_ms(args.runs))
    from zoo import training

    print(f"CPU: {training.cpu_name()}, {os.cpu_count()} cores; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(f"{args.model}: {count} ops; µs of the graph cut after op k (one thread, batch 1, "
          f"dynamic axes {args.length})\n")
    print("| k | µs | + µs | op k | its output |")
    print("|---|---|---|---|---|")
    previous = 0.0
    for end in cuts:
        micros = statistics.median(samples[end]) * 1e3
        op = graph.operators[end - 1]
        code = model.operatorCodes[op.opcodeIndex]
        name = names[max(code.builtinCode, code.deprecatedBuiltinCode)]
        tensor = graph.tensors[op.outputs[0]].name.decode()
        print(f"| {end} | {micros:.1f} | {micros - previous:+.1f} | {name} | {tensor[-60:]} |")
        previous = micros
    return 0


if __name__ == "__main__":
    sys.exit(main())
