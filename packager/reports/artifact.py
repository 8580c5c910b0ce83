"""What ``packager inspect ARTIFACT`` shows: the manifest, and whether the files still match it
(an integrity failure raises), as a JSON-able dict and as text. Imports nothing heavy."""

from __future__ import annotations

from pathlib import Path

from packager.runtime.integrity import sha256_file, verify_artifact
from packager.runtime.jsonable import to_jsonable
from packager.runtime.manifest import MANIFEST_FILE, read_manifest


def describe_artifact(path: Path) -> tuple[dict, str]:
    """The manifest, and whether the files still match it (an integrity failure raises), with
    the manifest's own sha256: the digest to pin when loading a copy (``load(path, sha256=...)``)."""
    manifest = read_manifest(path)
    verify_artifact(path, manifest)
    digest = sha256_file(path / MANIFEST_FILE)
    info = {**to_jsonable(manifest), "manifest_sha256": digest}
    parity = manifest.parity
    lines = [f"{manifest.name}: {manifest.chain_kind.value} as {manifest.format.value}/{manifest.precision.value}, "
             f"schema {manifest.schema_version}, built {manifest.built_at}",
             f"manifest sha256: {digest} (pin it: packager.runtime.load(path, sha256=...))",
             f"source: {manifest.source.location} (sha256 {manifest.source.sha256})",
             "modules: " + " -> ".join(m.kind.value for m in manifest.modules),
             "verbs: " + "; ".join(f"{verb} -> {spec.summary()}" for verb, spec in manifest.verbs.items())]
    for route in manifest.routes:
        lines.append(f"route {route.name}: {route.graph} inputs={list(route.inputs)} "
                     f"outputs={[f'{o.name}{list(o.shape)}' for o in route.outputs]}")
        settings = to_jsonable(route.tokenizer or route.image) or {}
        lines.append(f"  {'tokenizer' if route.tokenizer else 'image preprocessing'}: "
                     + ", ".join(f"{k}={v}" for k, v in settings.items() if k not in ("special_ids", "words")))
        if route.tokenizer is not None and route.tokenizer.words is not None:
            lines.append(f"  word tokenizer: {route.tokenizer.words.summary()}")
        if route.chat is not None:
            lines.append(f"  chat template: {route.chat.template} ({route.chat.message_format.value} messages, "
                         f"task variable {route.chat.task_variable}, restore suffix {route.chat.restore_suffix})")
    lines.append(f"parity: {parity.status.value} over {parity.texts} inputs; "
                 + ", ".join(f"{k}={v:.8g}" for k, v in sorted(parity.metrics.items())))
    lines.append(f"files ({len(manifest.files)}, all sha256-verified):")
    lines += [f"  {f.sha256[:16]}  {f.size:>12}  {f.path}" for f in manifest.files]
    return info, "\n".join(lines)
