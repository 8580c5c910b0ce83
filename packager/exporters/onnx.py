"""Whole-chain ONNX export: torch.onnx's dynamo exporter, then onnxscript's ORT fusions.

The legacy TorchScript exporter fails on transformers 5 models; the dynamo exporter traces the
chain's real forward with dynamic batch and sequence axes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from packager.chain.tokenizer import NO_LENGTH_LIMIT
from packager.errors import ExportError
from packager.exporters.recipe import RecipeContext, RecipeResult
from packager.quiet import quiet
from packager.runtime.enums import Format, Int8Arithmetic, ModuleKind, Precision
from packager.runtime.routes import PIXEL_VALUES, PROMPT_LENGTH
from packager.runtime.vision_inputs import DYNAMIC_AXES
from packager.scratch import scratch_dir

if TYPE_CHECKING:
    from packager.chain.graph import RouteGraph

log = logging.getLogger(__name__)

# The weights go to an external data file next to the graph (hashed, moved and loaded with it):
# onnxruntime memory-maps it instead of parsing the weights out of the protobuf, which halves the
# memory a load peaks at (MiniLM: +54 MB instead of +141 MB over the imports), and a protobuf
# message could not hold more than 2 GiB anyway.
EXTERNAL_DATA_ALIGNMENT = 64 * 1024  # page-aligned tensors map without copies


class OnnxFp32:
    name = "onnx-fp32"
    format = Format.ONNX
    precision = Precision.FP32
    calibrates = False
    int8_arithmetic: Int8Arithmetic | None = None

    def export(self, graph: RouteGraph, dest: Path, *, stem: str, context: RecipeContext) -> RecipeResult:
        path = dest / f"{stem}.onnx"
        fusions = export_onnx(graph, path, fuse=True)
        check_loads(path)
        return RecipeResult(files=graph_files(path), details={"ort_fusions": _count(fusions)})


def graph_files(path: Path) -> list[str]:
    """The graph file and its external data file."""
    data = path.with_name(f"{path.name}.data")
    return [path.name, data.name] if data.exists() else [path.name]


def save_external(source: Path, path: Path) -> list[str]:
    """Save the graph at ``source`` (its weights wherever its data files hold them) at ``path``,
    every weight in ``<path>.data``, read one at a time; returns the files."""
    import onnx_ir as ir

    ir.save(ir.load(source), path, external_data=f"{path.name}.data", alignment=EXTERNAL_DATA_ALIGNMENT)
    return graph_files(path)


def read_weight(tensor: Any, folder: Path | str) -> Any:
    """An initializer's values as a numpy array, read from its external data file in ``folder``
    if it has one, leaving ``tensor`` as it was (some onnx versions keep the bytes they read in
    the tensor, so a graph edited weight by weight would end up holding every weight it read)."""
    from onnx import TensorProto, numpy_helper

    header = TensorProto()
    header.CopyFrom(tensor)  # the data stays on disk: the copy is the tensor's description
    return numpy_helper.to_array(header, base_dir=str(folder))


def save_beside(model: Any, path: Path) -> Path:
    """Save an onnx ``ModelProto`` at ``path``: the weights it holds in memory (an edit's new
    tensors) in ``<path>.data``, those already in another data file of the folder left there
    (the graph loads only from that folder)."""
    import onnx

    data = path.with_name(f"{path.name}.data")
    data.unlink(missing_ok=True)  # onnx appends to a data file already there
    onnx.save(model, path, save_as_external_data=True, location=data.name)
    return path


def export_onnx(graph: RouteGraph, path: Path, *, fuse: bool) -> dict[str, int]:
    """Save the route's export at ``path`` (weights in ``<path>.data``); with ``fuse``, onnxscript's
    ORT fusions (attention, SkipLayerNorm, GELU...) run first (onnxruntime-only operators;
    OpenVINO and the quantizers want the plain graph). Returns the fusion counts."""
    import onnx_ir as ir
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    model = ir.load(_exported(graph))
    fusions: dict[str, int] = {}
    if fuse:
        try:
            with quiet("onnxscript"):
                biases = _merge_attention_biases(model)
                model, fusions = optimize_for_ort(model)
        except Exception as e:
            raise ExportError(f"fusing route {graph.name!r} for onnxruntime failed: {_summary(e)}") from e
        _unfold_batch_transposes(model, route=graph.name)
        log.info("fused for onnxruntime: %s%s", _count(fusions),
                 f" (attention biases merged: {biases})" if biases else "")
    # Outside the try: a failed write (disk full, permissions) is an OSError the build reports as such.
    ir.save(model, path, external_data=f"{path.name}.data", alignment=EXTERNAL_DATA_ALIGNMENT)
    return fusions


def _merge_attention_biases(model: Any) -> int:
    """Add a relative position bias to the padding mask before they reach the attention scores.

    onnxscript's attention rule (``ort_fusions.sdpa``) takes one additive mask between the scaled
    ``Q @ K^T`` and the Softmax; MPNet adds its relative position bias and then the padding mask,
    ``Softmax((scores + bias) + mask)``, so its attention stayed unfused. Rewritten as
    ``Softmax(scores + (bias + mask))`` it fuses, the sum becoming the fused op's attention bias.
    Exact where it matters: the mask is 0 on attended positions (``bias + 0`` is ``bias``), and
    masked ones get no weight either way. Returns how many were rewritten."""
    from onnxscript.rewriter import pattern

    def biased(op, scores, bias, mask):
        return op.Softmax(op.Add(op.Add(scores, bias), mask), axis=-1)

    def merged(op, scores, bias, mask):
        return op.Softmax(op.Add(scores, op.Add(bias, mask)), axis=-1)

    return pattern.RewriteRule(biased, merged).apply_to_model(model)


_TRANS_BATCH = {"transBatchA": 0, "transBatchB": 1}


def _unfold_batch_transposes(model: Any, *, route: str) -> None:
    """Undo onnxscript's batch-transpose folds that onnxruntime cannot run.

    onnxscript's ``TransposeFusedMatMulWithFlippedBatch*`` rules fold a ``Transpose`` that moves
    the first axis of one operand into the FusedMatMul as ``transBatchA``/``transBatchB``, without
    checking the other operand: onnxruntime's kernel wants both of rank 3 or more and equal
    ("Two inputs should have same rank and rank >= 3 if transBatchA or transBatchB is true").
    ``nn.MultiheadAttention`` (SigLIP's vision pooling head) multiplies a transposed
    ``[batch, seq, dim]`` activation by a rank-2 projection weight, so the fused graph loads and
    then fails on every call. Such a node gets its Transpose back as an explicit node (the same
    permutation ``transBatch`` stands for) and the flag cleared; a fold whose ranks are unknown
    is refused here rather than failing in the parity gate."""
    import onnx_ir as ir

    for graph in (model.graph, *model.functions.values()):
        for node in list(ir.traversal.RecursiveGraphIterator(graph)):
            if node.op_type != "FusedMatMul" or node.domain != "com.microsoft":
                continue
            ranks = [None if value is None or value.shape is None else value.shape.rank() for value in node.inputs[:2]]
            for flag, index in _TRANS_BATCH.items():
                attribute = node.attributes.get(flag)
                if attribute is None or not attribute.as_int() or (ranks[0] == ranks[1] and (ranks[0] or 0) >= 3):
                    continue
                rank = ranks[index]
                if rank is None or rank < 3:
                    raise ExportError(f"route {route!r}: the onnxruntime fusions made FusedMatMul {node.name!r} "
                                      f"with {flag}=1 on operands of ranks {ranks}, which onnxruntime cannot run")
                operand = node.inputs[index]
                assert operand is not None  # a rank was read from it
                # transBatch moves the first axis to the second-to-last: perm [1, ..., N-2, 0, N-1].
                perm = [*range(1, rank - 1), 0, rank - 1]
                transpose = ir.node("Transpose", inputs=[operand], attributes={"perm": perm},
                                    name=f"{node.name}_{flag}")
                transpose.outputs[0].name = f"{node.name}_{flag}_out"
                node.graph.insert_before(node, transpose)
                node.replace_input_with(index, transpose.outputs[0])
                node.attributes.pop(flag)


# Every recipe of a build starts from the same torch export of a route, the slow step (seconds
# for a tiny model, minutes for a large one): it is made once per route graph and kept on disk
# (not in memory: a large model's graph is gigabytes) until the graph is gone.
_EXPORTS: weakref.WeakKeyDictionary[Any, tempfile.TemporaryDirectory] = weakref.WeakKeyDictionary()


def _exported(graph: RouteGraph) -> Path:
    """The route's unfused ONNX export (``torch.onnx`` dynamo, dynamic batch and sequence axes)."""
    if graph.module not in _EXPORTS:
        scratch = scratch_dir("export")
        _export(graph, Path(scratch.name) / "model.onnx")
        _EXPORTS[graph.module] = scratch
    return Path(_EXPORTS[graph.module].name) / "model.onnx"


def _export(graph: RouteGraph, path: Path) -> None:
    import onnx_ir as ir
    import torch

    # The sequence axis is bounded by the truncation length: position embeddings end there, and an
    # unbounded Dim would conflict with the model's own range checks.
    dynamic_shapes = _dynamic_shapes(graph)
    # The exporter prints reports and graph dumps: kept for the error only.
    chatter = io.StringIO()
    try:
        with (quiet("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", output=True) as chatter,
              _frozen(graph.module)):
            program = torch.onnx.export(
                graph.module, graph.sample_inputs, dynamo=True, dynamic_shapes=dynamic_shapes,
                input_names=list(graph.input_names), output_names=[o.name for o in graph.outputs],
                optimize=True, verbose=False,
            )
            if program is None:  # only without dynamo=True
                raise ExportError(f"route {graph.name!r}: torch.onnx.export returned no program")
            _check_dynamic(graph, program.model)
    except ExportError:
        raise
    except Exception as e:
        log.debug("exporter output:\n%s", chatter.getvalue())
        raise ExportError(f"exporting route {graph.name!r} to ONNX failed: {_summary(e)}\n{_suspects(graph)}") from e
    _drop_stack_traces(program.model)
    ir.save(program.model, path, external_data=f"{path.name}.data", alignment=EXTERNAL_DATA_ALIGNMENT)


@contextlib.contextmanager
def _frozen(module: Any) -> Iterator[None]:
    """The module's parameters without requires_grad while it is exported, as they were after.
    A parameter that requires grad and reaches an attention mask (T5's relative position bias,
    added to the padding mask) makes torch's CPU SDPA take its math kernel ([batch, heads, length,
    dim] memory) instead of the flash kernel ([batch, length, heads, dim] memory). The exporter's
    passes disagree on that: its decomposition sees the flash layout, so the model's
    ``transpose(1, 2).contiguous()`` drops out and the reshape after it becomes a view, and its
    type-promotion pass reruns the graph with the math layout, where that view fails ("Cannot view
    a tensor with shape [b, s, 4, 8] and strides ... as a tensor with shape (b, s, 32)"). No
    export needs gradients; the values are the same."""
    trained = [p for p in module.parameters() if p.requires_grad]
    for parameter in trained:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in trained:
            parameter.requires_grad_(True)


# The exporter's per-node Python stack traces: file paths of the build host (the checkout, the
# virtual environment) and a per-process counter of generated code (``<eval_with_key>.42``), so
# the same build made other graph files after other exports in the process, or on another host.
_STACK_TRACE = "pkg.torch.onnx.stack_trace"


def _drop_stack_traces(model: Any) -> None:
    """Remove the exporter's stack-trace metadata from every node, in every (sub)graph and function."""
    import onnx_ir as ir

    graphs = [model.graph, *model.functions.values()]
    for graph in graphs:
        for node in ir.traversal.RecursiveGraphIterator(graph):
            node.metadata_props.pop(_STACK_TRACE, None)


def _dynamic_shapes(graph: RouteGraph) -> tuple[tuple[dict[int, Any], ...]]:
    """Each input's dynamic axes: batch and sequence of token inputs, the batch of a prompt length
    or of pixel values (their image size is the processor's crop); a vision-language route's
    inputs by ``vision_inputs.DYNAMIC_AXES``, its patches a merge block's worth of its merged
    patches. ChainGraph.forward takes *tensors: one positional parameter holding the tuple."""
    import torch

    limit = graph.tokenizer.max_length if graph.tokenizer else NO_LENGTH_LIMIT
    merged = torch.export.Dim("merged")
    dims = {"batch": torch.export.Dim("batch"), "merged": merged,
            "sequence": torch.export.Dim("sequence", max=limit) if limit < NO_LENGTH_LIMIT
            else torch.export.Dim("sequence")}
    if graph.vision is not None:
        dims["patches"] = graph.vision.merge_size**2 * merged
        return (tuple({axis: dims[dim] for axis, dim in DYNAMIC_AXES[name].items()} for name in graph.input_names),)
    return (tuple({0: dims["batch"]} if _dynamic_axes(name) == 1 else {0: dims["batch"], 1: dims["sequence"]}
                  for name in graph.input_names),)


def _dynamic_axes(name: str) -> int:
    """How many leading axes of an input are dynamic: the batch of a prompt length or of pixel
    values (their image size is the processor's crop), batch and sequence of token inputs."""
    return 1 if name in (PROMPT_LENGTH, PIXEL_VALUES) else 2


def _count(fusions: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(fusions.items()) if v) or "none"


def _summary(error: Exception) -> str:
    """The exporter's own exception text runs to pages; its first lines say what broke."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return f"{type(error).__name__}: " + "\n  ".join(lines[:6])


def _suspects(graph: RouteGraph) -> str:
    """Name the route's modules, custom ones first: they are the usual reason a trace fails."""
    custom = [f"{m.name!r} ({m.type})" for m in graph.modules if m.kind is ModuleKind.CUSTOM]
    chain = " -> ".join(f"{m.kind.value} {m.name!r}" for m in graph.modules)
    hint = (f"Custom module(s) {', '.join(custom)} must be traceable by torch.export (no Python branches on "
            "tensor values, no loops over the sequence length)." if custom else "Run with -vv for the exporter's log.")
    return f"The route is: {chain}. {hint}"


def _check_dynamic(graph: RouteGraph, model: Any) -> None:
    """An exporter falling back to a draft trace can freeze an axis to the sample's size without
    failing; such a graph would refuse every other batch shape, so refuse it here."""
    def axes(name: str) -> list[int]:
        return list(DYNAMIC_AXES[name]) if graph.vision is not None else list(range(_dynamic_axes(name)))

    frozen = [f"{value.name}{list(value.shape)}" for value in model.graph.inputs
              if any(isinstance(list(value.shape)[axis], int) for axis in axes(value.name))]
    if frozen:
        raise ExportError(f"route {graph.name!r}: the exporter froze input axes to the sample's sizes "
                          f"({', '.join(frozen)}); a module uses Python control flow over the batch or sequence length")


def check_loads(path: Path) -> None:
    """Fail at export time, not in the parity gate, if onnxruntime cannot load the graph."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    # Loading is the check: prepacking would copy every MatMul weight into onnxruntime's own
    # layout, a second copy of the weights beside the torch reference's.
    options.add_session_config_entry("session.disable_prepacking", "1")
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ExportError(f"onnxruntime cannot load the exported graph {path.name}: {e}") from e
