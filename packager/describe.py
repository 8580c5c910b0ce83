"""What ``packager inspect`` shows: a saved chain, or a built artifact. Each function returns a
JSON-able dict and the same information as text."""

from __future__ import annotations

from pathlib import Path

from packager.chain import check_compilable, load_reference, read_chain
from packager.errors import UnsupportedModuleError
from packager.runtime.integrity import verify_artifact
from packager.runtime.manifest import read_manifest, to_jsonable


def describe_source(source: str, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> tuple[dict, str]:
    """The chain as the build would see it: kind, modules, routes with their inputs, outputs and
    tokenizer settings resolved from the torch reference, verbs, prompts, and whether this
    version can compile it (the routes are only resolved when it can)."""
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    info = {
        "source": {"kind": chain.source.kind.value, "location": chain.source.location,
                   "revision": chain.source.revision},
        "chain_kind": chain.kind.value,
        "modules": [{"name": m.name, "path": m.path, "type": m.type, "kind": m.kind.value}
                    for m in chain.all_modules()],
        "pipelines": {route: [m.name for m in modules] for route, modules in chain.pipelines().items()},
    }
    try:
        check_compilable(chain)
        info["compilable"] = "yes"
    except UnsupportedModuleError as e:
        info["compilable"] = str(e)
    if info["compilable"] == "yes":
        from packager.graph import compile_routes, verb_routes

        reference = load_reference(chain)
        info["routes"] = {r.name: {"inputs": list(r.input_names), "outputs": to_jsonable(r.outputs),
                                   "tokenizer": to_jsonable(r.tokenizer)} for r in compile_routes(reference, chain)}
        info["verbs"] = verb_routes(reference, chain)
        info.update(prompts=dict(reference.prompts), default_prompt_name=reference.default_prompt_name)
    revision = f", revision {chain.source.revision}" if chain.source.revision else ""
    lines = [f"{chain.source.location} ({chain.source.kind.value}{revision})", f"chain kind: {chain.kind.value}",
             "modules:"]
    lines += [f"  {m.kind.value:<22} {m.type} (path {m.path!r})" for m in chain.all_modules()]
    for route, spec in info.get("routes", {}).items():
        lines.append(f"route {route}: inputs {spec['inputs']} -> {[o['name'] for o in spec['outputs']]}")
        lines.append("  tokenizer: " + ", ".join(f"{k}={v}" for k, v in spec["tokenizer"].items() if k != "special_ids"))
    if "verbs" in info:
        lines += [f"verbs: {info['verbs']}", f"prompts: {info['prompts']} (default: {info['default_prompt_name']})"]
    lines.append(f"compilable: {info['compilable']}")
    return info, "\n".join(lines)


def describe_artifact(path: Path) -> tuple[dict, str]:
    """The manifest, and whether the files still match it (an integrity failure raises)."""
    manifest = read_manifest(path)
    verify_artifact(path, manifest)
    info = to_jsonable(manifest)
    parity = manifest.parity
    lines = [f"{manifest.name}: {manifest.chain_kind.value} as {manifest.format.value}/{manifest.precision.value}, "
             f"schema {manifest.schema_version}, built {manifest.built_at}",
             f"source: {manifest.source.location} (sha256 {manifest.source.sha256})",
             "modules: " + " -> ".join(m.kind.value for m in manifest.modules),
             f"verbs: {manifest.verbs}"]
    for route in manifest.routes:
        lines.append(f"route {route.name}: {route.graph} inputs={list(route.inputs)} "
                     f"outputs={[f'{o.name}{list(o.shape)}' for o in route.outputs]}")
        lines.append("  tokenizer: " + ", ".join(f"{k}={v}" for k, v in to_jsonable(route.tokenizer).items()
                                                 if k != "special_ids"))
    lines.append(f"parity: {parity.status.value} over {parity.texts} inputs; "
                 + ", ".join(f"{k}={v:.8g}" for k, v in sorted(parity.metrics.items())))
    lines.append(f"files ({len(manifest.files)}, all sha256-verified):")
    lines += [f"  {f.sha256[:16]}  {f.size:>12}  {f.path}" for f in manifest.files]
    return info, "\n".join(lines)
