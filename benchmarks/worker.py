"""sentence-transformers' own ONNX/OpenVINO backends, measured by ``packager.bench.worker``: what
only the benchmark needs. They run in .venv-st-backends (benchmarks/setup_st_backends.sh), which
has no packager installed, so the worker module is imported from this checkout.

    .venv-st-backends/bin/python benchmarks/worker.py JOB_JSON

The job's mode is ``st-onnx`` or ``st-openvino``; its path is the chain folder, optionally
``:FILE`` for an exported graph inside it.
"""

import time

STARTED = time.perf_counter()

import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from packager.bench.worker import Run, main  # noqa: E402  (the standard library only, at import)


def open_backend(job: dict) -> Run:
    import torch

    torch.set_num_threads(job["threads"])
    from sentence_transformers import SentenceTransformer

    folder, _, file_name = job["path"].partition(":")
    if job["mode"] == "st-onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = job["threads"]
        model_kwargs = {"session_options": options}
    else:
        model_kwargs = {"ov_config": {"INFERENCE_NUM_THREADS": job["threads"], "PERFORMANCE_HINT": "LATENCY"}}
    if file_name:
        model_kwargs["file_name"] = file_name
    backend = job["mode"].removeprefix("st-")
    model = SentenceTransformer(folder, device="cpu", backend=backend, model_kwargs=model_kwargs)
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, show_progress_bar=False)


if __name__ == "__main__":
    main(sys.argv[1:], {"st-onnx": open_backend, "st-openvino": open_backend}, STARTED)
