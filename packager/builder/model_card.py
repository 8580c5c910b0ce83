"""The model card: the README.md of every artifact, from its manifest and the speed the build
measured: what it is, how it was built and checked, how fast it ran, how to load it."""

from __future__ import annotations

from packager.runtime.enums import ChainKind, ParityStatus
from packager.runtime.manifest import Manifest
from packager.runtime.routes import ImageSpec


def model_card(manifest: Manifest, speed: dict[str, float]) -> str:
    """The model card: what the artifact is, how it was built and checked, how fast it ran, how
    to load it."""
    return "\n\n".join([_about(manifest), _how_built(manifest), _parity(manifest),
                        f"## Speed\n\n{_speed(manifest, speed)}", _how_to_load(manifest)]) + "\n"


def _about(manifest: Manifest) -> str:
    verbs = ", ".join(f"`{verb}` -> {spec.summary()}" for verb, spec in manifest.verbs.items())
    revision = f" revision `{manifest.source.revision}`" if manifest.source.revision else ""
    chain = " -> ".join(m.kind.value for m in manifest.modules)
    return f"""# {manifest.name}

A {manifest.chain_kind.value} chain ({chain}) compiled into
{manifest.format.value} graphs ({manifest.precision.value}) by chain-packager, one per route:

{_routes(manifest)}

Verbs: {verbs}. Source: `{manifest.source.location}`{revision}
(sha256 of its files `{manifest.source.sha256[:16]}...`). Built {manifest.built_at}."""


def _how_built(manifest: Manifest) -> str:
    decided = "; ".join(f"{k}: {v}" for k, v in sorted(manifest.recipe.details.items())) or "nothing to decide"
    tools = ", ".join(f"{k} {v}" for k, v in sorted(manifest.tools.items()))
    return f"""## How it was built

Recipe `{manifest.recipe.name}`; what it decided: {decided}. Calibration: {_calibration(manifest)}.
Tools: {tools}."""


def _parity(manifest: Manifest) -> str:
    parity = manifest.parity
    metrics = "\n".join(f"| {k} | {v:.10g} |" for k, v in sorted(parity.metrics.items())) or "| (pending) | |"
    gate = ", ".join(f"{k} {v}" for k, v in parity.gate.items()) or "-"
    return f"""## Parity with the torch reference: {parity.status.value}

Reference: sentence-transformers on the source folder; candidate: this directory's own loader,
inputs in, results out, over {parity.texts} inputs. Gate: {gate}.

| metric | value |
|---|---|
{metrics}"""


def _how_to_load(manifest: Manifest) -> str:
    runtime = "openvino" if manifest.format.value == "openvino" else "onnxruntime"
    return f"""## Load it

With `pip install chain-packager` (its base install is the runtime alone: `numpy`, `tokenizers`
and `{runtime}`, no torch):

```python
from packager.runtime import load
model = load("path/to/{manifest.name}", sha256="...")   # the manifest digest `packager inspect` prints
{_IMAGE_USAGE if any(r.image for r in manifest.routes) else _USAGE[manifest.chain_kind]}
```

`sha256` pins `manifest.json`, which pins every other file; without it the files are checked
against this directory's own manifest only, which catches corruption and edits but not a resealed
forgery. Nothing from this directory is imported, so none of its code runs. A registered version
loads with MLflow: `mlflow.pyfunc.load_model("models:/NAME@champion").predict(...)`, or
`packager.runtime.load("models:/NAME@champion")`, which checks the download against the registry.

The directory also carries its own copy of the loader, for a machine with only those three
packages: `sys.path.insert(0, "path/to/{manifest.name}"); from loader import load`. Importing it
runs this directory's code before anything is checked (an edited `.py`, or bytecode planted in
place of the `loader/__pycache__` file, runs first): code cannot vouch for itself, so use it only
on a copy you made yourself."""


_USAGE = {
    ChainKind.SENTENCE_TRANSFORMER: 'embeddings = model.encode(["some text"], batch_size=32)',
    ChainKind.SPARSE_ENCODER: 'sparse = model.encode_document(["some text"])   # .toarray(), model.decode(sparse[0])',
    ChainKind.CROSS_ENCODER: 'scores = model.predict([("a query", "a document")])   # or model.rank(query, documents)',
    ChainKind.MULTI_VECTOR_ENCODER: 'scores = model.similarity(model.encode_query(["a query"]), '
                                    'model.encode_document(["a document"]))   # MaxSim',
}
_IMAGE_USAGE = ('vectors = model.encode(["a photo of a cat", "cat.jpg", image_bytes, pil_image])   # needs Pillow\n'
                'scores = model.similarity(model.encode(["a cat"]), vectors)')


def _image_steps(image: ImageSpec | None) -> str:
    """An image route's preprocessing, for people."""
    if image is None:
        return ""
    steps = ["RGB"] if image.convert_rgb else []
    if image.shortest_edge or image.size:
        rule = f"shortest edge {image.shortest_edge}" if image.shortest_edge else f"{image.size}"
        steps.append(f"resize ({rule}, PIL filter {image.resample})")
    steps += [f"center crop {image.crop}"] if image.crop else []
    steps += [f"rescale {image.rescale:.6g}"] if image.rescale else []
    steps += [f"normalize (mean {image.mean}, std {image.std})"] if image.mean else []
    return "images: " + ", ".join(steps)


def _routes(manifest: Manifest) -> str:
    return "\n".join(
        f"- `{r.name}`: `{r.graph}`, inputs {', '.join(r.inputs)} -> "
        f"{', '.join(f'{o.name} {list(o.shape)}' for o in r.outputs)}; "
        + (f"tokenizer `{r.tokenizer.file}`, max length {r.tokenizer.max_length}, padding "
           f"{r.tokenizer.padding_side.value}" if r.tokenizer else _image_steps(r.image))
        + (f"; chat template `{r.chat.template}` ({r.chat.message_format.value} messages)" if r.chat else "")
        for r in manifest.routes)


def _calibration(manifest: Manifest) -> str:
    calibration = manifest.calibration
    if calibration is None:
        return "none (no calibration)"
    return f"{calibration.samples} inputs from {calibration.source} (sha256 `{calibration.sha256[:16]}...`)"


def _speed(manifest: Manifest, speed: dict[str, float]) -> str:
    if not speed:
        why = "" if manifest.parity.status is ParityStatus.PASSED else " (the artifact did not pass its parity gate)"
        return f"not measured at build time{why}. Measure it with `packager bench {manifest.name}`."
    return (f"{speed['inputs_per_second']:.1f} inputs/s in batches of 32 and a median batch-1 latency of "
            f"{speed['latency_p50_ms']:.2f} ms, through this directory's loader on the build machine, over the "
            f"calibration inputs. Measure on your own machine and texts with `packager bench {manifest.name}`.")

