"""One measurement in a fresh process, so variants do not share caches, threads or memory.

    python benchmarks/worker.py MODE TARGET TEXTS_JSON OUT_NPY [--cold]

MODE is ``artifact`` (TARGET: an artifact directory, run by its own loader), ``torch``
(TARGET: a saved chain, sentence-transformers in torch), or ``st-onnx`` / ``st-openvino``
(sentence-transformers' own backends; TARGET: the chain folder, optionally ``:FILE`` for an
exported graph inside it). Prints one JSON line. With --cold it only times import + load + the
first encode, from the first line of this process.
"""

import time

STARTED = time.perf_counter()

import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402

THREADS = 2
BATCH = 32
LATENCY_TEXTS = 200
ROUNDS = 3


def open_model(mode: str, target: str):
    if mode == "artifact":
        sys.path.insert(0, target)
        from loader import load  # the loader inside the artifact: numpy, tokenizers, onnxruntime/openvino

        model = load(target, threads=THREADS)
        return lambda texts, batch_size: model.encode(texts, batch_size=batch_size)
    import torch

    torch.set_num_threads(THREADS)
    from sentence_transformers import SentenceTransformer

    folder, _, file_name = target.partition(":")
    kwargs = {}
    if mode == "st-onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = THREADS
        kwargs = {"backend": "onnx", "model_kwargs": {"session_options": options, **({"file_name": file_name} if file_name else {})}}
    elif mode == "st-openvino":
        kwargs = {"backend": "openvino", "model_kwargs": {
            "ov_config": {"INFERENCE_NUM_THREADS": THREADS, "PERFORMANCE_HINT": "LATENCY"},
            **({"file_name": file_name} if file_name else {})}}
    model = SentenceTransformer(folder, device="cpu", **kwargs)
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, show_progress_bar=False)


def main() -> None:
    mode, target, texts_path, out_path = sys.argv[1:5]
    texts = json.load(open(texts_path))
    encode = open_model(mode, target)
    first = encode(texts[:1], 1)
    if "--cold" in sys.argv:
        print(json.dumps({"cold_start_s": time.perf_counter() - STARTED, "dim": len(first[0])}))
        return
    encode(texts[:BATCH], BATCH)  # warm-up
    rounds = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        embeddings = encode(texts, BATCH)
        rounds.append(time.perf_counter() - started)
    latencies = []
    for text in texts[:LATENCY_TEXTS]:
        started = time.perf_counter()
        encode([text], 1)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    import numpy as np

    np.save(out_path, np.asarray(embeddings, dtype=np.float32))
    print(json.dumps({
        "texts_per_s": len(texts) / sorted(rounds)[len(rounds) // 2],
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p99_ms": 1000 * latencies[int(len(latencies) * 0.99) - 1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))


if __name__ == "__main__":
    main()
