"""The legacy sentence-transformers modules (issue 33, item 4): WordEmbeddings with its
WhitespaceTokenizer (the average_word_embeddings_glove models), WordWeights, BoW,
WeightedLayerPooling, CNN and LSTM compile whole, the runtime repeating the word tokenizer
exactly; a CNN or LSTM where the reference is not a function of the text alone (or fails) is
refused before export, saying why.

Each chain is saved by sentence-transformers itself from a tiny vocabulary written here, built
once per session to ONNX fp32 (OpenVINO in the slow set), and compared through the artifact's
own loader with the reference's ``encode`` on texts that take every branch of the tokenizer."""

from __future__ import annotations

import json
import random
import re
import shutil
import string
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import tiny_models as tm
from conftest import made_once, shared_root
from packager.builder import BuildOptions, build
from packager.chain.read import read_chain
from packager.chain.spec import ModuleSpec
from packager.chain.tokenizer import resolve_tokenizer
from packager.cli import main
from packager.publish import import_loader
from packager.runtime.enums import Format, ModuleKind, ParityStatus
from packager.runtime.manifest import read_manifest
from packager.runtime.text import TextEncoder
from packager.runtime.words import WordTokenizer

MAX_WORDS = 6  # the GloVe chain's max_seq_length: the long texts below have more known words
# Words of a GloVe-style vocabulary: cased forms, words with punctuation in them, unicode, and
# words that are also stop words (which never embed).
VOCABULARY = ["cat", "sat", "mat", "dog", "Paris", "paris", "hello", "world", "café", "naïve", "end.", "u.s.",
              "e-mail", "don't", "the", "Über", "über", "東京", "x", "42", "short", "text", "longer", "sample",
              "batch", "needs", "padding", "ÉCOLE", "école"]
# Every branch of WhitespaceTokenizer.tokenize: a word as it is, with punctuation stripped, lowercased;
# stop words at each step; unknown words; empty and whitespace-only texts; unicode case and spaces;
# more known words than max_seq_length.
TEXTS = [
    "The cat sat on the mat.", "THE CAT SAT", "Hello, world!", "(dog) [cat] {mat}", "end. end end.. u.s. U.S.",
    "e-mail don't DON'T", "Paris PARIS paris", "café CAFÉ Café naïve", "Über über ÜBER", "ÉCOLE école École",
    "東京 x 42 42.", "", "   ", "...", "!!! ??? ---", "unknown words only here", "a an the of",
    "cat\tdog\nmat\u00a0sat\u2003hello", "cat dog mat sat hello world café naïve Paris x 42",
    "dog " * 40, "short text, longer sample: batch needs padding!",
]


def _glove_file(path: Path, words: list[str], dimension: int, seed: int) -> Path:
    """A GloVe text file (word then its vector per line), as the real ones are written."""
    generator = np.random.default_rng(seed)
    lines = [" ".join([word, *(f"{v:.6f}" for v in generator.normal(size=dimension))]) for word in words]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def save_glove(path: Path) -> Path:
    """WordEmbeddings.from_text_file (English stop words, case kept) -> mean Pooling -> Normalize:
    average_word_embeddings_glove.6B.300d's chain, 8 dimensions, with a query prompt."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    path.mkdir(parents=True)
    embeddings = modules.WordEmbeddings.from_text_file(str(_glove_file(path.parent / "glove.txt", VOCABULARY, 8, 0)))
    embeddings.max_seq_length = MAX_WORDS
    # A query prompt and include_prompt=False: sentence-transformers gives Pooling a prompt length
    # only from a Transformer, so after WordEmbeddings the prompt's words are pooled all the same.
    SentenceTransformer(modules=[embeddings, modules.Pooling(8, "mean", include_prompt=False), modules.Normalize()],
                        prompts={"query": "hello paris: "}, device="cpu").save(str(path))
    return path


def save_weighted(path: Path) -> Path:
    """A lowercasing WhitespaceTokenizer with its own stop words -> WordEmbeddings -> WordWeights
    (idf-like weights, an unknown-word weight) -> mean Pooling (over the weights) -> Dense."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    words = ["PADDING_TOKEN", *VOCABULARY]
    tokenizer = WhitespaceTokenizer(words, stop_words={"cat", "end", "..."}, do_lower_case=True)
    generator = torch.Generator().manual_seed(1)
    embeddings = modules.WordEmbeddings(tokenizer, torch.randn(len(words), 8, generator=generator),
                                        max_seq_length=MAX_WORDS)
    weights = {word: 0.25 + i / 10 for i, word in enumerate(VOCABULARY[::2])}
    torch.manual_seed(2)
    SentenceTransformer(modules=[embeddings, modules.WordWeights(words, weights, unknown_word_weight=0.5),
                                 modules.Pooling(8, "mean"), modules.Dense(8, 6)], device="cpu").save(str(path))
    return path


def save_bow(path: Path, *, cumulative: bool) -> Path:
    """BoW (tf-idf-like weights over the vocabulary, counted per occurrence or once) [-> Normalize]."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    weights = {word: 1.0 + i / 7 for i, word in enumerate(VOCABULARY[1::2])}
    bow = modules.BoW(VOCABULARY, weights, unknown_word_weight=0.75, cumulative_term_frequency=cumulative)
    chain = [bow, modules.Normalize()] if cumulative else [bow]
    SentenceTransformer(modules=chain, device="cpu").save(str(path))
    return path


def save_weighted_layers(path: Path) -> Path:
    """A tiny BERT that returns its hidden states -> WeightedLayerPooling (weights over layers 1-2,
    not all equal) -> mean Pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    backbone = tm.save_tiny_bert(path.with_name(path.name + "-backbone"))
    transformer = modules.Transformer(str(backbone), max_seq_length=48, config_kwargs={"output_hidden_states": True})
    layers = modules.WeightedLayerPooling(32, num_hidden_layers=2, layer_start=1)
    with torch.no_grad():
        layers.layer_weights.copy_(torch.tensor([0.3, 1.7]))
    SentenceTransformer(modules=[transformer, layers, modules.Pooling(32, "mean")], device="cpu").save(str(path))
    return path


def save_cnn(path: Path, *, after: str = "glove", module: str = "CNN") -> Path:
    """The GloVe WordEmbeddings (or the tiny BERT) -> CNN (kernels 1, 3 and 5) or LSTM -> mean Pooling."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer import modules

    path.mkdir(parents=True)
    if after == "glove":
        first = modules.WordEmbeddings.from_text_file(str(_glove_file(path.parent / "glove.txt", VOCABULARY, 8, 3)))
    else:
        first = modules.Transformer(str(tm.save_tiny_bert(path.with_name(path.name + "-backbone"))), max_seq_length=48)
    width = first.get_embedding_dimension()
    torch.manual_seed(4)
    layer = modules.CNN(width, out_channels=4, kernel_sizes=[1, 3, 5]) if module == "CNN" \
        else modules.LSTM(width, hidden_dim=4, num_layers=2)  # bidirectional
    SentenceTransformer(modules=[first, layer, modules.Pooling(layer.get_embedding_dimension(), "mean")],
                        device="cpu").save(str(path))
    return path


CHAINS: dict[str, Callable[[Path], Path]] = {
    "glove": save_glove,
    "word-weights": save_weighted,
    "bow": lambda p: save_bow(p, cumulative=True),
    "bow-presence": lambda p: save_bow(p, cumulative=False),
    "weighted-layers": save_weighted_layers,
    "cnn": save_cnn,
    "lstm": lambda p: save_cnn(p, module="LSTM"),
}


@pytest.fixture(scope="session")
def legacy_chains(tmp_path_factory) -> dict[str, Path]:
    """Each chain, saved once per test run (pytest-xdist workers share them)."""
    root = shared_root(tmp_path_factory) / "legacy-chains"
    with made_once(root) as todo:
        if todo:
            for name, save in CHAINS.items():
                save(root / name / "chain")
    return {name: root / name / "chain" for name in CHAINS}


@pytest.fixture(scope="session")
def legacy_artifacts(tmp_path_factory, legacy_chains) -> dict[str, Path]:
    """Each chain's ONNX fp32 artifact, built once per test run."""
    out = shared_root(tmp_path_factory) / "legacy-dist"
    with made_once(out) as todo:
        if todo:
            for name, chain in legacy_chains.items():
                build(str(chain), BuildOptions(out=out, name=name, measure_speed=False, write_reports=False))
    return {name: out / f"{name}-onnx-fp32" for name in CHAINS}


def _reference(chain: Path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(chain), device="cpu")


def _assert_loader_matches_reference(artifact: Path, chain: Path) -> None:
    manifest = read_manifest(artifact)
    assert manifest.parity.status is ParityStatus.PASSED
    model, reference = import_loader(artifact).load(artifact), _reference(chain)
    got, expected = np.asarray(model.encode(TEXTS)), reference.encode(TEXTS, convert_to_numpy=True)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    if "query" in reference.prompts:  # a prompt's words embed with the text's
        np.testing.assert_allclose(model.encode_query(TEXTS), reference.encode_query(TEXTS), rtol=1e-5, atol=1e-6)
    # Texts of one at a time too (another batch width): the same vectors.
    np.testing.assert_allclose(np.stack([np.asarray(model.encode([t]))[0] for t in TEXTS]), expected,
                               rtol=1e-5, atol=1e-6)
    assert np.count_nonzero(np.abs(expected).sum(axis=1)) >= len(TEXTS) // 2  # most texts embed to something


@pytest.mark.parametrize("name", list(CHAINS))
def test_a_legacy_chain_compiles_whole_and_its_loader_gives_the_references_embeddings(name, legacy_chains,
                                                                                       legacy_artifacts):
    _assert_loader_matches_reference(legacy_artifacts[name], legacy_chains[name])


def test_weighted_layer_pooling_is_compiled_over_the_hidden_layers(legacy_chains, legacy_artifacts):
    """The Transformer hands WeightedLayerPooling its hidden layers (without them the module passes
    the features through): other layer weights give other embeddings, and the artifact gives the
    saved weights' ones."""
    reference = _reference(legacy_chains["weighted-layers"])
    assert "all_layer_embeddings" in reference[0](reference[0].preprocess(TEXTS[:2]))
    saved = reference.encode(TEXTS)
    with torch.no_grad():
        reference[1].layer_weights.copy_(torch.tensor([1.0, 0.0]))
    assert np.abs(reference.encode(TEXTS) - saved).max() > 1e-2
    artifact = legacy_artifacts["weighted-layers"]
    np.testing.assert_allclose(import_loader(artifact).load(artifact).encode(TEXTS), saved, rtol=1e-5, atol=1e-6)


def test_the_glove_manifest_holds_the_word_tokenizer_and_its_vocabulary(legacy_chains, legacy_artifacts, capsys):
    """Stop words, flags and punctuation in the manifest, the vocabulary (word -> id) as the route's
    tokenizer file; the long text is truncated to max_seq_length words, as the reference truncates.
    inspect sums the word tokenizer up, for the folder and the artifact alike."""
    artifact = legacy_artifacts["glove"]
    manifest = read_manifest(artifact)
    assert [m.kind for m in manifest.modules] == [ModuleKind.WORD_EMBEDDINGS, ModuleKind.POOLING, ModuleKind.NORMALIZE]
    route = manifest.routes[0]
    assert route.inputs == ("input_ids", "attention_mask")
    words = route.text.words
    assert words is not None and words.punctuation == string.punctuation and not words.lowercase
    assert "the" in words.stop_words and route.text.max_length == MAX_WORDS
    vocabulary = json.loads((artifact / route.text.file).read_text(encoding="utf-8"))
    reference = _reference(legacy_chains["glove"])
    assert vocabulary == dict(reference[0].tokenizer.word2idx)
    long_text = TEXTS[-3]
    assert len(reference[0].tokenizer.tokenize(long_text)) > MAX_WORDS
    encoder = TextEncoder.open(artifact, route.text, route.inputs)
    assert encoder.encode([long_text], max_length=MAX_WORDS)[0][0].ids == \
        reference[0].preprocess([long_text])["input_ids"][0].tolist()
    summary = f"word tokenizer: lowercase=False, {len(words.stop_words)} stop words, words stripped of"
    for source in (legacy_chains["glove"], artifact):
        assert main(["inspect", str(source)]) == 0
        assert summary in capsys.readouterr().out


def _random_texts(words: list[str], count: int, seed: int) -> list[str]:
    """Texts of vocabulary words, their case changed, punctuation around and inside them, unicode
    letters and spaces, and stop words."""
    generator = random.Random(seed)
    pieces = [*words, "the", "The", "THE", "of", "a", "", "é", "ß", "İ", "ǅ", "Σ", "ς", "ﬁ", "東"]
    spaces = [" ", "  ", "\t", "\n", "\u00a0", "\u2003", "\u3000", "\x1c"]
    texts = []
    for _ in range(count):
        parts = []
        for _ in range(generator.randint(0, 8)):
            word = generator.choice(pieces)
            word = generator.choice([word, word.upper(), word.lower(), word.title(), word.swapcase()])
            before, after = ("".join(generator.choices(string.punctuation + "«»¿", k=generator.randint(0, 2)))
                             for _ in range(2))
            parts.append(before + word + after + generator.choice(spaces))
        texts.append("".join(parts))
    return texts


@pytest.mark.parametrize("settings", [
    {},  # English stop words, case kept: GloVe's
    {"do_lower_case": True},
    {"stop_words": ["cat", "", "PARIS", "end"], "do_lower_case": False},
    {"stop_words": [], "do_lower_case": True},
], ids=["glove", "lowercase", "odd-stop-words", "no-stop-words"])
def test_the_runtime_word_tokenizer_gives_whitespace_tokenizers_ids_id_for_id(settings):
    """Resolved from the module as the build resolves it (``resolve_tokenizer``), the runtime's
    tokenizer gives every text the ids WhitespaceTokenizer.tokenize gives it; the vocabulary has
    words that are empty, all punctuation or cased, as a saved config may."""
    from sentence_transformers.sentence_transformer.modules import WordEmbeddings
    from sentence_transformers.sentence_transformer.modules.tokenizer import WhitespaceTokenizer

    sigma = "\u03c3"  # a small sigma, beside the final one
    words = ["PADDING_TOKEN", *VOCABULARY, "", "...", "!", "CAT", "İ", "ß", "ss", "ﬁ", "fi", sigma, "ς", "the"]
    tokenizer = WhitespaceTokenizer(words, **settings)
    module = WordEmbeddings(tokenizer, torch.zeros(len(words), 2))
    spec, vocabulary = resolve_tokenizer(ModuleSpec(name="0", path="", type="WordEmbeddings",
                                                    kind=ModuleKind.WORD_EMBEDDINGS, config={}), module)
    assert spec.words is not None
    runtime = WordTokenizer.from_str(vocabulary, spec.words, where="test")
    texts = TEXTS + _random_texts(words, 3000, seed=len(json.dumps(settings)))
    mismatched = [t for t in texts if runtime.encode(t).ids != tokenizer.tokenize(t)]
    assert not mismatched, mismatched[:5]
    assert sum(bool(tokenizer.tokenize(t)) for t in texts) > len(texts) // 2  # the texts do reach the vocabulary


@pytest.mark.parametrize("layers,bidirectional", [(1, False), (1, True), (3, False), (2, True)])
def test_the_unpacked_lstm_step_is_the_packed_lstm(layers, bidirectional):
    """The export step against the module, in torch: a batch of texts of different lengths, an
    empty one (length clamped to 1, as the module clamps it) among them."""
    from sentence_transformers.sentence_transformer.modules import LSTM

    from packager.chain.steps import UnpackedLSTM

    torch.manual_seed(layers)
    module = LSTM(6, hidden_dim=5, num_layers=layers, bidirectional=bidirectional).eval()
    lengths = torch.tensor([4, 7, 0, 1, 7, 2])
    mask = (torch.arange(7).unsqueeze(0) < lengths.unsqueeze(1)).long()
    embeddings = torch.randn(6, 7, 6)
    with torch.no_grad():
        expected = module({"token_embeddings": embeddings, "attention_mask": mask,
                           "sentence_lengths": lengths})["token_embeddings"]
        got = UnpackedLSTM(module)({"token_embeddings": embeddings, "attention_mask": mask})["token_embeddings"]
    assert got.shape == expected.shape == (6, 7, 5 * (1 + bidirectional))
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["glove", "bow"])
def test_a_legacy_artifact_has_a_vocabulary_and_no_tokenizers_file(name, legacy_artifacts):
    """The word tokenizer is the runtime's own (the standard library): the artifact has a
    vocabulary and no tokenizers file, and its loader's words module imports nothing else."""
    artifact = legacy_artifacts[name]
    source = (artifact / "loader" / "words.py").read_text(encoding="utf-8")
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "json", "pathlib", "typing", ".errors", ".files", ".routes"}, imports
    assert read_manifest(artifact).routes[0].text.file == "vocabulary.json"
    assert (artifact / "vocabulary.json").is_file() and not (artifact / "tokenizer.json").exists()


def test_a_word_embeddings_with_another_tokenizer_is_refused_naming_it(legacy_chains, tmp_path):
    chain = Path(shutil.copytree(legacy_chains["glove"], tmp_path / "chain"))
    config = chain / "wordembedding_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "tokenizer_class": "sentence_transformers.models.tokenizer."
                                                                  "PhraseTokenizer"}))
    assert main(["build", str(chain), "--out", str(tmp_path / "dist"), "-q"]) == 4
    from packager.chain.compilable import check_compilable
    from packager.errors import UnsupportedModuleError

    with pytest.raises(UnsupportedModuleError, match=re.escape(
            "WhitespaceTokenizer, which the runtime repeats, not "
            "'sentence_transformers.models.tokenizer.PhraseTokenizer': it splits texts with nltk's word_tokenize")):
        check_compilable(read_chain(str(chain)))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["glove", "bow", "lstm"])
def test_legacy_chains_build_to_openvino_and_pass_their_gate(name, legacy_chains, tmp_path):
    """The GloVe chain, and the two whose graphs hold the least common operators (BoW's
    scatter-add, the LSTM's), in OpenVINO."""
    build(str(legacy_chains[name]), BuildOptions(formats=(Format.OPENVINO,), out=tmp_path, name=name,
                                                 measure_speed=False, write_reports=False))
    _assert_loader_matches_reference(tmp_path / f"{name}-openvino-fp32", legacy_chains[name])


@pytest.fixture
def no_export(monkeypatch) -> list:
    """torch.onnx.export raising if called: a refusal that comes back with exit code 4 came first."""
    calls: list = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("the exporter was called")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    return calls


def _refused(chain: Path, out: Path, capsys) -> str:
    """The build's exit code must be 4 (unsupported module); returns what it printed."""
    assert main(["build", str(chain), "--out", str(out)]) == 4
    captured = capsys.readouterr()
    return " ".join((captured.out + captured.err).split())


def test_an_lstm_after_a_transformer_is_refused_before_export_saying_why(tmp_path, no_export, capsys):
    """LSTM reads the texts' lengths that WordEmbeddings computes; after a Transformer
    sentence-transformers itself fails."""
    chain = save_cnn(tmp_path / "bert-lstm" / "chain", after="bert", module="LSTM")
    message = _refused(chain, tmp_path / "dist", capsys)
    assert "an LSTM reads the texts' lengths that only a WordEmbeddings computes (sentence_lengths), so it compiles " \
           "in a route that starts with one, not with Transformer '0'" in message, message
    assert not no_export


def test_a_cnn_that_changes_the_sequence_length_is_refused_before_export(legacy_chains, tmp_path, no_export, capsys):
    chain = Path(shutil.copytree(legacy_chains["cnn"], tmp_path / "chain"))
    config = next(chain.glob("*CNN/cnn_config.json"))
    config.write_text(json.dumps({**json.loads(config.read_text()), "kernel_sizes": [2, 4]}))
    message = _refused(chain, tmp_path / "dist", capsys)
    assert "a CNN with kernel sizes [2, 4] and strides [1, 1, 1] changes the sequence's length" in message, message
    assert not no_export


def test_a_cnn_reading_nonzero_padding_is_refused_before_export(tmp_path, no_export, capsys):
    """After a Transformer, the padding positions a CNN convolves over hold hidden states: a text's
    vector would depend on its batch."""
    message = _refused(save_cnn(tmp_path / "bert-cnn" / "chain", after="bert"), tmp_path / "dist", capsys)
    assert "a CNN convolves across the padding after a text's last token, and its input there (from Transformer " \
           "'0') is not zeros" in message, message
    assert not no_export
