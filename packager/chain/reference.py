"""The torch reference: sentence-transformers running the saved chain on CPU, offline, with
transformers held to the safetensors weights and its loading report watched."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packager.chain.spec import ChainSpec
from packager.chain.st_internals import watch_loading
from packager.chain.weight_values import integer_parameters
from packager.chain.weights import loading_problems
from packager.errors import MissingDependencyError, SourceError
from packager.runtime.enums import ChainKind


def load_reference(chain: ChainSpec) -> Any:
    """The torch reference of ``chain``, refused if transformers had to make up weights the
    checkpoint lacks or reshape ones it has (it would only log that), or cast integer tensors
    into float parameters (it does that silently)."""
    with watch_loading() as reports:
        try:
            model = open_model(chain.source.folder, chain.kind, trust_remote_code=chain.trust_remote_code,
                               allow_pickle=chain.allow_pickle)
        except MissingDependencyError:
            raise
        except Exception as e:
            problems = loading_problems(reports)
            cause = "; ".join(problems) if problems else f"{type(e).__name__}: {e}"
            raise SourceError(f"sentence-transformers could not load {chain.source.location}: {cause}") from e
    floats = {name: str(p.dtype).removeprefix("torch.")
              for name, p in model.named_parameters() if p.is_floating_point()}
    problems = loading_problems(reports) + [
        f"{problem}; integers would be cast to meaningless floats. Save the weights in the config's dtype"
        for problem in integer_parameters(chain.source.folder, [f.path for f in chain.files], floats)]
    if problems:
        raise SourceError(f"{chain.source.location}: the weights do not match the model's config:\n  "
                          + "\n  ".join(problems) + "\nThe reference would not be the saved model; fix the config or "
                          "the checkpoint.")
    return model


def open_model(folder: str | Path, kind: ChainKind | str, *, trust_remote_code: bool, allow_pickle: bool) -> Any:
    """sentence-transformers' own class for ``kind`` on ``folder``: CPU, offline, eval mode, and
    safetensors only unless pickle is allowed (transformers would otherwise fall back to pickle
    weights behind our back). ``packager bench`` times this same model."""
    try:
        import sentence_transformers as st
    except ImportError as e:
        raise MissingDependencyError("building needs the build extra: pip install 'chain-packager[build]'") from e
    model_class = {ChainKind.SENTENCE_TRANSFORMER: st.SentenceTransformer, ChainKind.CROSS_ENCODER: st.CrossEncoder,
                   ChainKind.SPARSE_ENCODER: st.SparseEncoder,
                   ChainKind.MULTI_VECTOR_ENCODER: st.MultiVectorEncoder}[ChainKind(kind)]
    model_kwargs = {} if allow_pickle else {"use_safetensors": True}
    return model_class(str(folder), device="cpu", local_files_only=True, trust_remote_code=trust_remote_code,
                       model_kwargs=model_kwargs).eval()


# oneDNN's float32 precisions (torch.backends.mkldnn): "bf16" or "tf32" there make a CPU's float32
# matmuls and convolutions round to fewer bits, on CPUs that have the instructions.
_MKLDNN_PRECISIONS = ("matmul", "conv", "rnn")


@contextmanager
def torch_settings() -> Iterator[None]:
    """torch's process-wide settings that change what the reference computes and what is exported
    at torch's own defaults for the block, then given back as they were. A build (and a
    validation) must not depend on what ran before it in the process: a notebook or a test that
    set bfloat16 as the default dtype (sentence-transformers' Dense layers are made in it, so
    their saved float32 weights load rounded to bfloat16: 2.6e-3 on a tiny chain's embeddings),
    another default device, or reduced float32 matmul precision would have changed the reference,
    the ranges, the exported graph and the gate's verdict. Thread counts change only the order of
    float sums, and are left to the caller."""
    import torch

    mkldnn = torch.backends.mkldnn
    # torch.set_float32_matmul_precision (the older API) sets mkldnn.matmul's too, so the new API
    # alone reads and pins both, without torch's warning about mixing the two.
    precisions = {name: getattr(mkldnn, name).fp32_precision for name in _MKLDNN_PRECISIONS if hasattr(mkldnn, name)}
    dtype, device = torch.get_default_dtype(), torch.get_default_device()
    torch.set_default_dtype(torch.float32)
    if device.type != "cpu":
        torch.set_default_device(None)
    for name in precisions:
        getattr(mkldnn, name).fp32_precision = "ieee"
    try:
        yield
    finally:
        torch.set_default_dtype(dtype)
        if device.type != "cpu":
            torch.set_default_device(device)
        for name, value in precisions.items():
            getattr(mkldnn, name).fp32_precision = value
