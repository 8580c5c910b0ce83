"""Images (issue 18): a packaged CLIP-style chain's image throughput against sentence-transformers'
own in torch, measured in the same run, and each variant's per-image parity.

    .venv/bin/python benchmarks/bench_images.py [--dist DIR] [--out FILE] [--images N]

The model has the shape of CLIP ViT-B/32 (transformers' default CLIPConfig: a 12-layer 768-wide
vision tower on 224x224 images in 32x32 patches, a 12-layer 512-wide text tower, projections to
512; 151 M parameters) with random weights: no CLIP checkpoint ships on PyPI and nothing here may
reach a model hub, and speed does not depend on the values. Its tokenizer is the tiny fixtures'
byte-level BPE and its image processor CLIP's own settings (shortest edge 224, bicubic, center
crop 224, CLIP's mean and std). It is saved by sentence-transformers 6 and built to each variant
with ``packager build``; the gate's per-image cosines come from each variant's parity.json.

Throughput: ``encode`` of N images (matplotlib's photograph and drawings and crops of them, as
PIL images), batch 32, the median of 3 passes after a warm-up pass, 2 threads on every side
(torch.set_num_threads(2); the loader's runtime at its default on this 2-core machine), each side
in its own process, one after the other. Preprocessing is included on both sides: it is part of
what a service pays per image.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from throughput import measure
from variants import build_variant

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "fp16"), ("openvino", "int8")]
NAME = "clip-vit-b32-shaped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-images")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "images.json")
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()

    source = _save(args.dist / NAME)
    builds = {f"{fmt}-{precision}": _build(source, fmt, precision, args.dist) for fmt, precision in VARIANTS}
    rows = {"torch (sentence-transformers)": _measure(f"reference:{source}", args.images)}
    for variant, build in builds.items():
        if build["passed"]:
            rows[f"packaged {variant}"] = _measure(f"artifact:{args.dist / f'{NAME}-{variant}'}", args.images)
    torch_rate = rows["torch (sentence-transformers)"]["images_per_second"]
    for row in rows.values():
        row["vs_torch"] = round(row["images_per_second"] / torch_rate, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"images": args.images, "rows": rows, "builds": builds}, indent=2) + "\n")
    print(f"{'target':<32} {'images/s':>9} {'vs torch':>9}")
    for name, row in rows.items():
        print(f"{name:<32} {row['images_per_second']:>9.1f} {row['vs_torch']:>8.2f}x")
    for variant, build in builds.items():
        print(f"{variant}: built in {build['seconds']:.0f} s, gate {'passed' if build['passed'] else 'FAILED'}; "
              f"image cosine min {build['image_min_cosine']:.6f}, similarity rel diff "
              f"{build.get('similarity_rel_diff', float('nan')):.2e}")


def _save(path: Path) -> Path:
    if (path / "modules.json").exists():
        return path
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, PreTrainedTokenizerFast

    from tiny_models import train_byte_level_bpe

    backbone = path.with_name(path.name + "-backbone")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(), bos_token="<s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>", model_max_length=77)
    config = CLIPConfig(text_config=dict(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id))
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(backbone)
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(backbone)
    SentenceTransformer(modules=[Transformer(str(backbone))], device="cpu").save(str(path))
    return path


def _build(source: Path, fmt: str, precision: str, dist: Path) -> dict:
    """Build one variant (unless it is there): build time, gate, and the per-image cosines."""
    report = build_variant(source, NAME, fmt, precision, dist)
    variant = report["variants"][0]
    result = {"seconds": float(report["seconds"]), "passed": not variant.get("parity", {}).get("failures")}
    parity_file = dist / f"{NAME}-{fmt}-{precision}" / "parity.json"
    if parity_file.exists():
        import tempfile

        from packager.validators.image_samples import parity_images

        parity = json.loads(parity_file.read_text())
        cosines = parity["samples"]["images"]["cosine"]
        with tempfile.TemporaryDirectory() as folder:
            labels = list(parity_images(Path(folder)))
        result["image_cosine"] = dict(zip(labels, (round(c, 7) for c in cosines), strict=True))
        result["image_min_cosine"] = min(cosines)
        result["similarity_rel_diff"] = parity["metrics"]["images.similarity_rel_diff"]
    return result


def _measure(target: str, count: int) -> dict:
    """``encode`` throughput of ``count`` images in a fresh process."""
    found = measure(target, f"""
        from packager.validators.image_samples import calibration_images
        inputs = (calibration_images() * 10)[:{count}]
    """, batch_size=32, passes=3)
    seconds = statistics.median(found["times"])
    return {"images_per_second": round(count / seconds, 1), "seconds": round(seconds, 3)}


if __name__ == "__main__":
    main()
