"""Vision-language pages (issue 36): a Qwen2-VL-2B-shaped SentenceTransformer's build cost and its
page throughput and memory against sentence-transformers' own in torch, measured in the same run.

    .venv-vl/bin/python benchmarks/bench_vision.py [--text-layers N] [--vision-layers N]
                                                    [--page-tokens N] [--pages N] [--dist DIR] [--out FILE]

Runs in .venv-vl (scripts/setup.sh with PACKAGER_VL=1): the reference's Qwen-VL processor needs
torchvision. The model has Qwen2-VL-2B's shape (a 28-layer 1536-wide decoder with 12 heads, 2 KV
heads, an 8960-wide MLP and a 151,936-token vocabulary; a 32-layer 1280-wide vision tower with 16
heads on 14-pixel patches merged 2 x 2) with random weights: no Qwen-VL checkpoint ships on PyPI
and nothing here may reach a model hub, and speed does not depend on the values. ``--text-layers``
and ``--vision-layers`` cut its depth (every layer keeps the 2B widths), for a machine where the
whole depth does not fit or finish. Its tokenizer is the tiny fixtures' byte-level BPE with
Qwen-VL's special tokens and a cut-down Qwen-VL chat template (tests/tiny_vl.py); its image
processor Qwen2-VL's, with at most ``--page-tokens`` image tokens per page (max_pixels = tokens x
28 x 28). It is saved by sentence-transformers 6 (max_seq_length: the page tokens plus 256) and
built with ``packager build`` (the default gate), under /usr/bin/time for the build's peak RSS.

Throughput: ``encode`` of N pages (matplotlib's photograph and drawings resized to a US-letter page
at 150 dpi, 1275 x 1650, as PIL images), batch 4, the median of 2 passes after a warm-up pass, 2
threads on every side, each side in its own process (its peak RSS reported), one after the other.
Preprocessing is included on both sides.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from throughput import measure

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = [("onnx", "fp32"), ("onnx", "int8"), ("openvino", "fp32"), ("openvino", "int8")]
PAGE = (1275, 1650)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-layers", type=int, default=28)
    parser.add_argument("--vision-layers", type=int, default=32)
    parser.add_argument("--page-tokens", type=int, default=1280)
    parser.add_argument("--pages", type=int, default=8)
    parser.add_argument("--variants", default=",".join(f"{f}-{p}" for f, p in VARIANTS))
    parser.add_argument("--dist", type=Path, default=ROOT / "dist" / "bench-vision")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "vision.json")
    args = parser.parse_args()

    name = f"qwen2-vl-2b-shaped-t{args.text_layers}-v{args.vision_layers}-p{args.page_tokens}"
    source = _save(args.dist / name, args)
    builds = {variant: _build(source, name, variant, args.dist) for variant in args.variants.split(",")}
    rows = {"torch (sentence-transformers)": _measure(f"reference:{source}", args.pages)}
    for variant, build in builds.items():
        if build["passed"]:
            rows[f"packaged {variant}"] = _measure(f"artifact:{args.dist / f'{name}-{variant}'}", args.pages)
    torch_rate = rows["torch (sentence-transformers)"]["pages_per_second"]
    for row in rows.values():
        row["vs_torch"] = round(row["pages_per_second"] / torch_rate, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {"model": name, "parameters": _parameters(source), "pages": args.pages, "rows": rows, "builds": builds}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{name}: {result['parameters'] / 1e6:.0f} M parameters")
    print(f"{'target':<32} {'pages/s':>8} {'vs torch':>9} {'peak RSS MB':>12}")
    for target, row in rows.items():
        print(f"{target:<32} {row['pages_per_second']:>8.3f} {row['vs_torch']:>8.2f}x {row['peak_rss_mb']:>12.0f}")
    for variant, build in builds.items():
        print(f"{variant}: built in {build['seconds']:.0f} s, peak RSS {build['peak_rss_mb']:.0f} MB, gate "
              f"{'passed' if build['passed'] else 'FAILED'}: {build['gate']}")


def _save(path: Path, args: argparse.Namespace) -> Path:
    if (path / "modules.json").exists():
        return path
    sys.path.insert(0, str(ROOT / "tests"))
    import torch
    import transformers as tf
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling
    from tiny_vl import PIL_IMAGES, VL_SPECIALS, VL_TEMPLATE

    from tiny_models import train_byte_level_bpe

    backbone = path.with_name(path.name + "-backbone")
    tokenizer = tf.PreTrainedTokenizerFast(tokenizer_object=train_byte_level_bpe(post_processor="eos"),
                                           eos_token="</s>", pad_token="<pad>", unk_token="<unk>", padding_side="left")
    tokenizer.add_tokens(VL_SPECIALS, special_tokens=True)
    tokenizer.chat_template = VL_TEMPLATE
    ids = dict(zip(VL_SPECIALS, tokenizer.convert_tokens_to_ids(VL_SPECIALS), strict=True))
    config = tf.Qwen2VLConfig(
        text_config={"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960,
                     "num_hidden_layers": args.text_layers, "num_attention_heads": 12, "num_key_value_heads": 2,
                     "max_position_embeddings": 32768, "rope_theta": 1e6, "pad_token_id": tokenizer.pad_token_id,
                     "eos_token_id": tokenizer.eos_token_id,
                     "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]}},
        vision_config={"depth": args.vision_layers, "embed_dim": 1280, "hidden_size": 1536, "num_heads": 16,
                       "mlp_ratio": 4, "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2},
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"])
    torch.manual_seed(0)
    tf.Qwen2VLModel(config).eval().save_pretrained(backbone)
    image_processor = tf.Qwen2VLImageProcessor(patch_size=14, min_pixels=4 * 28 * 28,
                                               max_pixels=args.page_tokens * 28 * 28)
    tf.Qwen2VLProcessor(image_processor=image_processor, tokenizer=tokenizer,
                        video_processor=tf.Qwen2VLVideoProcessor(), chat_template=VL_TEMPLATE).save_pretrained(backbone)
    transformer = Transformer(str(backbone), max_seq_length=args.page_tokens + 256, processor_kwargs=dict(PIL_IMAGES))
    SentenceTransformer(modules=[transformer, Pooling(1536, pooling_mode="lasttoken"), Normalize()],
                        device="cpu").save(str(path))
    config_file = path / "sentence_bert_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "processor_kwargs": PIL_IMAGES}))
    return path


def _parameters(source: Path) -> int:
    import math

    from safetensors import safe_open

    total = 0
    for file in source.rglob("*.safetensors"):
        with safe_open(str(file), "np") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())  # noqa: SIM118
    return total


def _build(source: Path, name: str, variant: str, dist: Path) -> dict:
    """One ``packager build`` of one variant under /usr/bin/time: seconds, peak RSS, gate."""
    fmt, precision = variant.split("-")
    reports = dist / f"reports-{variant}"
    start = time.perf_counter()
    done = subprocess.run(["/usr/bin/time", "-f", "peak_rss_kb %M", sys.executable, "-m", "packager.cli", "build",
                           str(source), "--name", name, "--out", str(dist), "--format", fmt, "--precision", precision,
                           "--no-register", "-q", "--reports", str(reports)], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    peak = next((int(line.split()[1]) for line in done.stderr.splitlines()[::-1] if line.startswith("peak_rss_kb")), 0)
    gate = "no parity report"
    parity_file = dist / f"{name}-{variant}" / "parity.json"
    if parity_file.exists():
        metrics = json.loads(parity_file.read_text())["metrics"]
        gate = ", ".join(f"{k} {v:.6g}" for k, v in sorted(metrics.items())
                         if k.endswith(("min_cosine", "similarity_rel_diff")) and k.count(".") <= 1)
    elif done.returncode:
        gate = done.stderr.strip().splitlines()[-2 if len(done.stderr.strip().splitlines()) > 1 else -1][:300]
    return {"seconds": round(seconds, 1), "peak_rss_mb": round(peak / 1024), "passed": done.returncode == 0,
            "exit": done.returncode, "gate": gate}


def _measure(target: str, count: int) -> dict:
    """``encode`` throughput of ``count`` pages in a fresh process, and its peak RSS."""
    found = measure(target, f"""
        from packager.validators.image_samples import real_images
        pages = [image.convert("RGB").resize({PAGE!r}) for image in real_images().values()]
        inputs = (pages * {count})[:{count}]
    """, batch_size=4, passes=2)
    seconds = statistics.median(found["times"])
    return {"pages_per_second": round(count / seconds, 4), "seconds": round(seconds, 2),
            "peak_rss_mb": round(found["rss_kb"] / 1024)}


if __name__ == "__main__":
    main()
