"""``packager validate``: the parity gate of a built artifact run again, through its own loader,
against the saved chain it was built from, with the gate it was built with."""

from __future__ import annotations

import logging
from pathlib import Path

from packager.builder.contract import source_spec
from packager.builder.prepare import check_chat_inputs, inputs_file, parity_inputs
from packager.chain import load_reference, read_chain
from packager.chain.reference import torch_settings
from packager.publish import import_loader
from packager.runtime.manifest import Manifest
from packager.validators.parity import check_parity
from packager.validators.report import ParityReport

log = logging.getLogger(__name__)


def validate(artifact: Path, source: str, *, validation_data: Path | None = None, trust_remote_code: bool = False,
             allow_pickle: bool = False) -> ParityReport:
    """Re-run the parity gate of ``artifact`` against ``source`` (with torch's process-wide
    settings pinned, as the build had them: ``torch_settings``)."""
    with torch_settings():
        return _validate(artifact, source, validation_data=validation_data, trust_remote_code=trust_remote_code,
                         allow_pickle=allow_pickle)


def _validate(artifact: Path, source: str, *, validation_data: Path | None, trust_remote_code: bool,
              allow_pickle: bool) -> ParityReport:
    from packager.chain.graph import compile_routes, verb_specs

    candidate = import_loader(artifact).load(artifact)
    manifest: Manifest = candidate.manifest
    chain = read_chain(source, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    extra = inputs_file(validation_data, chain.kind)
    if source_spec(chain).sha256 != manifest.source.sha256:
        log.warning("the reference's files differ from those %s was built from (%s)", artifact,
                    manifest.source.location)
    reference = load_reference(chain)
    routes, verbs = compile_routes(reference, chain), verb_specs(reference, chain)
    inputs = parity_inputs(chain.kind, routes, verbs, extra)
    check_chat_inputs(reference, routes, verbs, inputs)
    return check_parity(reference, candidate, inputs, gate=dict(manifest.parity.gate))
