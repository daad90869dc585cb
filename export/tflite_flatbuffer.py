"""Reading and editing a .tflite flatbuffer through the LiteRT schema's object API (`read_model`,
`write_model`), for the export side: embedding the "dbd" metadata entry (`embed_metadata`), counting
the ops (`op_histogram`), naming each op's scope for ai-edge-quantizer (`op_scopes`) and refusing
non-builtin ops and layout Transposes (`check_ops`). The runtime reads the metadata without the
schema (dbd.runtime.engines.tflite).

The schema module (ai_edge_litert) is imported inside the functions that use it.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np

from dbd.core import DBDError
from dbd.runtime.metadata import METADATA_KEY


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def _op_names() -> dict[int, str]:
    schema = _schema()
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}


def read_model(data: bytes):
    """The flatbuffer as a ModelT; buffers stored after the flatbuffer (offset/size) are pulled inline."""
    schema = _schema()
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise DBDError("not a TFLite flatbuffer (no TFL3 identifier)")
    model = schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    for buffer in model.buffers or []:
        if buffer.offset and buffer.offset > 1:  # ai-edge-quantizer writes constants this way
            end = buffer.offset + buffer.size
            if end > len(data):
                raise DBDError("TFLite buffer points past the end of the file (truncated?)")
            buffer.data = np.frombuffer(data, np.uint8, count=buffer.size, offset=buffer.offset).copy()
            buffer.offset = buffer.size = 0
    return model


def write_model(model) -> bytes:
    import flatbuffers

    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def embed_metadata(data: bytes, text: str) -> bytes:
    """The flatbuffer with `text` as its metadata entry "dbd" (replacing an older one)."""
    schema = _schema()
    model = read_model(data)
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), np.uint8).copy()
    model.buffers = list(model.buffers or []) + [buffer]
    entry = schema.MetadataT()
    entry.name = METADATA_KEY
    entry.buffer = len(model.buffers) - 1
    kept = [
        m for m in (model.metadata or []) if (m.name.decode() if isinstance(m.name, bytes) else m.name) != METADATA_KEY
    ]
    model.metadata = kept + [entry]
    return write_model(model)


def op_histogram(data: bytes) -> tuple[collections.Counter, list[str], list[tuple[list[int], list[int]]]]:
    """(op name -> count over all subgraphs, custom op codes, (perm, input shape) of each TRANSPOSE)."""
    schema = _schema()
    model = read_model(data)
    names = _op_names()
    counts: collections.Counter = collections.Counter()
    custom, transposes = [], []
    for subgraph in model.subgraphs or []:
        for op in subgraph.operators or []:
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
            if builtin == schema.BuiltinOperator.CUSTOM:
                name = (code.customCode or b"?").decode("utf-8", "replace")
                custom.append(name)
                counts[f"CUSTOM:{name}"] += 1
                continue
            counts[names.get(builtin, f"BUILTIN_{builtin}")] += 1
            if builtin == schema.BuiltinOperator.TRANSPOSE and op.inputs is not None and len(op.inputs) > 1:
                perm_tensor = subgraph.tensors[op.inputs[1]]
                data_ = model.buffers[perm_tensor.buffer].data if perm_tensor.buffer < len(model.buffers) else None
                perm = np.frombuffer(bytes(data_), np.int32).tolist() if data_ is not None else []
                shape = subgraph.tensors[op.inputs[0]].shape
                transposes.append((perm, [] if shape is None else [int(v) for v in shape]))
    return counts, custom, transposes


def op_scopes(data: bytes) -> list[str]:
    """Each operator's scope as ai-edge-quantizer matches it: its output tensor names, joined."""
    model = read_model(data)
    return [
        ";".join(sg.tensors[i].name.decode("utf-8", "replace") for i in op.outputs if i >= 0)
        for sg in model.subgraphs or []
        for op in sg.operators or []
    ]


def is_layout_transpose(perm: list[int], shape: list[int] | None = None) -> bool:
    """NHWC <-> NCHW (or unknown perm): what a layout conversion leaves behind. A tensor with at most
    two dimensions over 1 is a matrix whatever the perm says: its transpose is the computation's
    own (e.g. tflite_rewrites.SeparableUpsample), not a feature map changing layout."""
    if shape and sum(v > 1 for v in shape) <= 2:
        return False
    return not perm or perm in ([0, 3, 1, 2], [0, 2, 3, 1])


def check_ops(path: Path, data: bytes) -> collections.Counter:
    """Builtin ops only and no layout Transpose; returns the op histogram."""
    counts, custom, transposes = op_histogram(data)
    if custom:
        flex = [c for c in custom if c.startswith("Flex")]
        kinds = collections.Counter(custom)
        listed = ", ".join(f"{k} x{v}" for k, v in kinds.most_common(3))
        what = "select-TensorFlow (Flex) ops" if flex else "custom ops"
        raise DBDError(
            f"'{path}' contains {what} ({listed}), which the phone's builtin TFLite runtime cannot run; "
            f"the model must use builtin ops only (replace the layer that produces them)"
        )
    layout = [p for p, shape in transposes if is_layout_transpose(p, shape)]
    if layout:
        raise DBDError(
            f"'{path}' contains {len(layout)} layout Transpose op(s) (NCHW<->NHWC) inside the graph, "
            f"which cost time on the phone; export through the NHWC wrapper (litert_torch.to_channel_last_io)"
        )
    return counts
