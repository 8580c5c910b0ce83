"""What ``packager inspect SOURCE`` shows: the chain as the build would see it, as a JSON-able
dict and as text."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from packager.chain import ChainSpec, check_compilable, load_reference, read_chain
from packager.chain.architectures import backbones
from packager.errors import UnsupportedModuleError
from packager.runtime.jsonable import to_jsonable
from packager.runtime.routes import WordsSpec


def describe_source(source: str, *, trust_remote_code: bool = False, allow_pickle: bool = False) -> tuple[dict, str]:
    """The chain as the build would see it: kind, modules, routes with their inputs, outputs and
    tokenizer settings resolved from the torch reference, verbs, prompts, and whether this
    version can compile it (the routes are only resolved when it can)."""
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    info: dict[str, Any] = {
        "source": {"kind": chain.source.kind.value, "location": chain.source.location,
                   "revision": chain.source.revision},
        "chain_kind": chain.kind.value,
        "modules": [{"name": m.name, "path": m.path, "type": m.type, "kind": m.kind.value}
                    for m in chain.all_modules()],
        "pipelines": {route: [m.name for m in modules] for route, modules in chain.pipelines().items()},
    }
    info["backbones"] = [{**asdict(b), "verdict": b.verdict} for b in backbones(chain)]
    try:
        check_compilable(chain)
        info["compilable"] = "yes"
    except UnsupportedModuleError as e:
        info["compilable"] = str(e)
    if info["compilable"] == "yes":
        info.update(_compiled(chain))
    return info, _text(chain, info)


def _compiled(chain: ChainSpec) -> dict[str, Any]:
    """What the torch reference resolves: the routes, the verbs, the prompts and the similarity."""
    from packager.chain.graph import compile_routes, verb_specs

    reference = load_reference(chain)
    verbs = verb_specs(reference, chain)
    return {
        "routes": {r.name: {"modality": r.modality.value, "inputs": list(r.input_names),
                            "outputs": to_jsonable(r.outputs), "tokenizer": to_jsonable(r.tokenizer),
                            "chat": to_jsonable(r.chat), "image": to_jsonable(r.image)}
                   for r in compile_routes(reference, chain)},
        "verbs": to_jsonable(verbs),
        "verb_summary": {verb: spec.summary() for verb, spec in verbs.items()},
        "prompts": dict(reference.prompts), "default_prompt_name": reference.default_prompt_name,
        "similarity": getattr(reference, "similarity_fn_name", None),  # none for cross-encoders
    }


def _text(chain: ChainSpec, info: dict[str, Any]) -> str:
    revision = f", revision {chain.source.revision}" if chain.source.revision else ""
    lines = [f"{chain.source.location} ({chain.source.kind.value}{revision})", f"chain kind: {chain.kind.value}",
             "modules:"]
    lines += [f"  {m.kind.value:<22} {m.type} (path {m.path!r})" for m in chain.all_modules()]
    for route, spec in info.get("routes", {}).items():
        lines += _route_lines(route, spec)
    if "verbs" in info:
        lines += ["verbs: " + "; ".join(f"{verb} -> {summary}" for verb, summary in info["verb_summary"].items()),
                  f"prompts: {info['prompts']} (default: {info['default_prompt_name']})"]
        lines += [f"similarity: {info['similarity']}"] if info["similarity"] else []
    lines += [f"backbone: {b['model_type']} (module {b['module']}): {b['verdict']}" for b in info["backbones"]]
    lines.append(f"compilable: {info['compilable']}")
    return "\n".join(lines)


def _route_lines(route: str, spec: dict[str, Any]) -> list[str]:
    lines = [f"route {route} ({spec['modality']}): inputs {spec['inputs']} -> {[o['name'] for o in spec['outputs']]}"]
    if spec["tokenizer"]:
        settings = ", ".join(f"{k}={v}" for k, v in spec["tokenizer"].items() if k not in ("special_ids", "words"))
        lines.append(f"  tokenizer: {settings}")
        words = spec["tokenizer"].get("words")
        if words:
            summary = WordsSpec(**{**words, "stop_words": tuple(words["stop_words"])}).summary()
            lines.append(f"  word tokenizer: {summary}")
    if spec["image"]:
        lines.append("  image preprocessing: " + ", ".join(f"{k}={v}" for k, v in spec["image"].items()))
    if spec["chat"]:
        chat = spec["chat"]
        lines.append(f"  chat template: {chat['message_format']} messages, task variable {chat['task_variable']}, "
                     f"restore suffix {chat['restore_suffix']}")
    return lines
