"""A causal-LM reranker's graph with the language-model head sliced to the rows LogitScore reads,
against the whole head (issue 16): export time and peak memory, graph size, and run time and
memory on real pairs.

    .venv/bin/python benchmarks/bench_sliced_head.py [--layers N] [--out FILE]

Two rerankers, saved by sentence-transformers as a CrossEncoder (text-generation Transformer with
a chat template + LogitScore): the tiny test fixture's shape (hidden 32, vocabulary ~700), and a
Qwen3-Reranker-0.6B-shaped one with random weights (hidden 1024, 16/8 heads of 128, MLP 3072, a
151,669-token vocabulary, tied embeddings) with fewer layers (``--layers``, default 4): layers
add the same cost to both graphs, the head is what differs. Each (model, head) is exported in a
fresh process (the chain compiled as ``packager build`` compiles it, then the ONNX fp32 recipe),
and run in another, torch-free as a service runs it (pairs per second: the median of 3 passes).
A step's peak memory is ``ru_maxrss`` less the RSS before it (export: after the reference is
loaded; run: before the session). The whole head is what the build exports with slicing off;
sentence-transformers' text-generation Transformer already keeps the logits of the last position
only (``logits_to_keep``), so the whole head is one vocabulary-wide product per pair, not one per
token.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fixtures' tokenizer and templates

SHAPES = {
    "tiny fixture": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                     "head_dim": 8, "vocab_size": None},
    "Qwen3-0.6B-shaped": {"hidden_size": 1024, "intermediate_size": 3072, "num_attention_heads": 16,
                          "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151_669},
}
PAIRS = 64
BATCH = 16
ROUNDS = 3  # passes over the pairs; their median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sliced_head.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-head-") as scratch:
        for shape in SHAPES:
            model = Path(scratch) / shape.replace(" ", "-")
            _worker({"step": "save", "shape": shape, "layers": args.layers, "path": str(model)})
            for sliced in (True, False):
                graph = Path(scratch) / f"{model.name}-{'sliced' if sliced else 'whole'}"
                exported = _worker({"step": "export", "path": str(model), "out": str(graph), "sliced": sliced})
                ran = _worker({"step": "run", "out": str(graph)})
                rows.append({"model": shape, "head": "sliced" if sliced else "whole", **exported, **ran})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"layers": args.layers, "pairs": PAIRS, "batch": BATCH, "rows": rows}, indent=2)
                        + "\n")
    print(_table(rows))


def _worker(job: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--worker", json.dumps(job)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{job['step']} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def _peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(job: dict) -> dict:
    if job["step"] == "save":
        return _save(job["shape"], job["layers"], Path(job["path"]))
    if job["step"] == "export":
        return _export(Path(job["path"]), Path(job["out"]), sliced=job["sliced"])
    return _run(Path(job["out"]))


def _save(shape: str, layers: int, path: Path) -> dict:
    import torch
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder.modules import LogitScore, Transformer
    from transformers import Qwen3Config, Qwen3ForCausalLM

    import tiny_models as tm

    backbone = tm.save_tiny_chat_qwen(path.with_name(path.name + "-backbone"), template=tm.RERANK_TEMPLATE,
                                      head="causal")
    if SHAPES[shape]["vocab_size"]:  # the tiny tokenizer's ids, in a model of the real shape
        config = Qwen3Config.from_pretrained(backbone)
        config.update({**SHAPES[shape], "num_hidden_layers": layers, "max_position_embeddings": 1024,
                       "initializer_range": 0.02, "layer_types": ["full_attention"] * layers})
        torch.manual_seed(0)
        Qwen3ForCausalLM(config).eval().save_pretrained(backbone)
    transformer = Transformer(str(backbone), transformer_task="text-generation", max_seq_length=512,
                              modality_config=tm._messages("logits", "flat", text=True),
                              module_output_name="causal_logits")
    ids = transformer.tokenizer.convert_tokens_to_ids(["the", "of"])
    CrossEncoder(modules=[transformer, LogitScore(true_token_id=ids[0], false_token_id=ids[1])],
                 device="cpu").save(str(path))
    return {}


def _export(model: Path, out: Path, *, sliced: bool) -> dict:
    import packager.chain.graph as graph_module
    from packager.chain import load_reference, read_chain
    from packager.chain.graph import compile_routes
    from packager.chain.steps import export_steps
    from packager.exporters.onnx import OnnxFp32
    from packager.exporters.recipe import RecipeContext
    from packager.runtime.jsonable import to_jsonable

    if not sliced:
        graph_module.export_steps = lambda specs, modules, slice_head=True: export_steps(specs, modules,
                                                                                         slice_head=False)
    chain = read_chain(str(model))
    reference = load_reference(chain)
    before = _rss_mb()
    started = time.perf_counter()
    route = compile_routes(reference, chain)[0]
    out.mkdir(parents=True)
    (out / "tokenizer.json").write_text(route.tokenizer_json)
    context = RecipeContext(kind=chain.kind, calibration=[], gate={}, tokenizer=route.tokenizer, chat=route.chat)
    files = OnnxFp32().export(route, out, stem="model", context=context).files
    (out / "chat_template.jinja").write_text(route.chat_template or "")
    (out / "route.json").write_text(json.dumps({"inputs": route.input_names, "tokenizer": to_jsonable(route.tokenizer),
                                                "chat": to_jsonable(route.chat) if route.chat else None}))
    seconds, peak = time.perf_counter() - started, _peak_mb() - before
    if _spans_vocabulary(out / "model.onnx") == sliced:  # the build falls back to the whole head if they differ
        raise SystemExit(f"the {'sliced' if sliced else 'whole'} head was asked for, the graph has the other")
    return {"export_s": seconds, "export_peak_mb": peak, "graph_mb": sum((out / f).stat().st_size for f in files) / 1e6}


def _spans_vocabulary(path: Path) -> bool:
    """Whether a weight product of the graph spans the vocabulary (the whole language-model head)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    dims = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:  # a tied head reads the embedding table through a Transpose
        if node.op_type == "Transpose" and node.input[0] in dims:
            dims[node.output[0]] = dims[node.input[0]][::-1]
    vocabulary = max(d[0] for d in dims.values() if len(d) == 2)
    return any(vocabulary in dims[i] for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "FusedMatMul")
               for i in n.input if i in dims)


def _run(out: Path) -> dict:
    """Scores for PAIRS real pairs in batches of BATCH through the exported graph, tokenized and
    rendered by the runtime's encoder (no torch in this process)."""
    import numpy as np
    import onnxruntime as ort

    from packager.runtime.jsonable import from_jsonable
    from packager.runtime.routes import ChatSpec, TokenizerSpec
    from packager.runtime.text import TextEncoder
    from packager.validators.texts import real_sentences

    route = json.loads((out / "route.json").read_text())
    chat = from_jsonable(ChatSpec, route["chat"], "chat") if route["chat"] else None
    encoder = TextEncoder.open(out, from_jsonable(TokenizerSpec, route["tokenizer"], "tokenizer"),
                               tuple(route["inputs"]), chat)
    texts = list(real_sentences()[: PAIRS * 6])
    pairs = [(texts[i], " ".join(texts[i + 1 : i + 6])) for i in range(0, PAIRS * 6, 6)]
    tokens, _ = encoder.encode(pairs, max_length=512)
    feeds = [encoder.pad(tokens[i : i + BATCH]) for i in range(0, PAIRS, BATCH)]
    before = _rss_mb()
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    session.run(None, feeds[0])  # warm-up
    passes = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        scores = [session.run(None, feed)[0] for feed in feeds]
        passes.append(time.perf_counter() - started)
        assert all(np.isfinite(s).all() for s in scores)
    return {"pairs_per_s": PAIRS / statistics.median(passes), "run_peak_mb": _peak_mb() - before,
            "tokens_per_pair": float(np.mean([len(t.ids) for t in tokens]))}


def _table(rows: list[dict]) -> str:
    lines = ["| model | head | export s | export peak MB | graph MB | pairs/s | x whole | run peak MB |",
             "|---" * 8 + "|"]
    for row in rows:
        whole = next(r for r in rows if r["model"] == row["model"] and r["head"] == "whole")
        lines.append(f"| {row['model']} | {row['head']} | {row['export_s']:.1f} | {row['export_peak_mb']:.0f} | "
                     f"{row['graph_mb']:.1f} | {row['pairs_per_s']:.1f} | "
                     f"{row['pairs_per_s'] / whole['pairs_per_s']:.2f} | {row['run_peak_mb']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(json.loads(sys.argv[2]))))
    else:
        main()
