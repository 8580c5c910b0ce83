"""sentence-transformers' own ONNX/OpenVINO backends, measured by ``packager.bench.worker``: what
only the benchmark needs. They run in .venv-st-backends (benchmarks/setup_st_backends.sh), which
has no packager installed, so the worker module is imported from this checkout.

    .venv-st-backends/bin/python benchmarks/worker.py JOB_JSON

The job's mode is ``st-onnx``, ``st-openvino`` (OpenVINO's default precision on this CPU, as
sentence-transformers leaves it) or ``st-openvino-f32`` (pinned to f32, as the packaged loader
pins it); its path is the chain folder, optionally ``:FILE`` for an exported graph inside it.
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
        config = {"INFERENCE_NUM_THREADS": job["threads"], "PERFORMANCE_HINT": "LATENCY"}
        if job["mode"] == "st-openvino-f32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        model_kwargs = {"ov_config": config}
    if file_name:
        model_kwargs["file_name"] = file_name
    backend = job["mode"].removeprefix("st-").removesuffix("-f32")
    model = SentenceTransformer(folder, device="cpu", backend=backend, model_kwargs=model_kwargs)
    return lambda texts, batch_size: model.encode(texts, batch_size=batch_size, show_progress_bar=False)


if __name__ == "__main__":
    main(sys.argv[1:], {mode: open_backend for mode in ("st-onnx", "st-openvino", "st-openvino-f32")}, STARTED)
