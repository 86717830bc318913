"""The model package: the contract between export and the runtime (DESIGN.md section 4).

A package is a directory::

    manifest.json          what the runtime needs; described field by field in README
    camera_encoder.onnx    one graph per modality encoder: input -> tokens [batch, tokens, dim]
    radar_encoder.onnx ...
    head.onnx              every modality's tokens + presence mask [batch, M] -> outputs
    vocab.json             the text vocabulary (when the text modality is present)

`load_package` validates everything up front: manifest fields, file hashes, graph inputs and
outputs (names, dtypes, shapes), opset, and that every file (external data included) lies inside
the package directory. A mismatch raises a `PackageError` subclass naming the graph and field, so
a bad package is refused before any frame is processed. `describe_graph` / `write_manifest` are
the export side of the same contract.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fusion_rt.errors import (
    ConfigError,
    GraphMismatchError,
    IntegrityError,
    ManifestError,
    PackageError,
    UnsafePathError,
)
from fusion_rt.messages import MODALITIES
from fusion_rt.outputs import json_text
from fusion_rt.rig import BevGrid, Rig, is_finite_number

if TYPE_CHECKING:
    from fusion_rt.preprocess import PreprocessConfig, Vocabulary

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "MIN_OPSET",
    "TensorSpec",
    "GraphSpec",
    "ModelPackage",
    "load_package",
    "describe_graph",
    "write_manifest",
    "replace_graph",
    "sha256_file",
    "bev_grid_text",
    "stage_names",
    "external_locations",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
MIN_OPSET = 17
_MAX_MANIFEST_BYTES = 16 << 20  # a manifest is a few KB; refuse absurd files before parsing them

# ONNX TensorProto element types <-> manifest dtype names.
_ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16", 11: "float64",
                16: "bfloat16"}

Dim = int | str  # a static size, or the name of a dynamic axis ("batch")


@dataclass(frozen=True)
class TensorSpec:
    """A graph input or output: name, dtype name ("float32", "int64"...) and shape."""

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TensorSpec:
        if not isinstance(d, dict) or not isinstance(d.get("name"), str) or not isinstance(d.get("dtype"), str) \
                or not isinstance(d.get("shape"), list):
            raise ManifestError(f"{where}: expected {{name, dtype, shape}}, got {d!r}")
        if d["dtype"] not in _ONNX_DTYPES.values():
            raise ManifestError(f"{where}: unknown dtype {d['dtype']!r}")
        for dim in d["shape"]:
            if not (isinstance(dim, str) or (isinstance(dim, int) and not isinstance(dim, bool) and dim > 0)):
                raise ManifestError(f"{where}: shape entries must be positive ints or axis names, got {dim!r}")
        return cls(d["name"], d["dtype"], tuple(d["shape"]))


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the package. `role` is "encoder" (with its `modality`) or "head"."""

    name: str
    file: str
    sha256: str
    role: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    modality: str | None = None
    opset: int = MIN_OPSET
    # ONNX external data files (location relative to the graph file's folder -> sha256), when the
    # graph keeps its weights outside the .onnx file: covered by the package's hashes like the graph.
    external_data: dict[str, str] = field(default_factory=dict)

    @property
    def tokens_output(self) -> str | None:
        """An encoder's token output: the one named 'tokens', else its only output (None: neither)."""
        names = [t.name for t in self.outputs]
        return "tokens" if "tokens" in names else (names[0] if len(names) == 1 else None)

    def to_dict(self) -> dict:
        d = {"file": self.file, "sha256": self.sha256, "role": self.role, "opset": self.opset,
             "inputs": [t.to_dict() for t in self.inputs], "outputs": [t.to_dict() for t in self.outputs]}
        if self.modality is not None:
            d["modality"] = self.modality
        if self.external_data:
            d["external_data"] = dict(sorted(self.external_data.items()))
        return d


@dataclass(frozen=True)
class ModelPackage:
    """A validated package. `manifest` is the parsed manifest.json; the typed fields are views of it."""

    root: Path
    manifest: dict
    sha256: str  # of manifest.json, which pins every graph's hash: one id for the whole package
    name: str
    precision: str
    rig: Rig
    modalities: tuple[str, ...]
    graphs: dict[str, GraphSpec]
    scene_labels: tuple[str, ...]
    bev_classes: tuple[str, ...]
    max_age_ns: dict[str, int]
    latency_budget_ms: dict[str, float] = field(default_factory=dict)
    vocabulary: Vocabulary | None = None  # parsed at load when text is a modality (what the runtime reads)

    def graph_path(self, name: str) -> Path:
        return self.root / self.graphs[name].file

    def encoder(self, modality: str) -> GraphSpec:
        return self.graphs[modality]

    @property
    def head(self) -> GraphSpec:
        return self.graphs["head"]

    @property
    def preprocess(self) -> dict:
        return self.manifest["preprocess"]

    @property
    def vocabulary_path(self) -> Path | None:
        rel = self.manifest.get("vocabulary")
        return self.root / rel if rel else None


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, rel: str, what: str) -> Path:
    """Resolve `rel` under `root`, refusing absolute paths, '..' escapes and symlinks that leave root."""
    if not isinstance(rel, str) or not rel:
        raise ManifestError(f"{what}: expected a relative file name, got {rel!r}")
    if os.path.isabs(rel):
        raise UnsafePathError(f"{what}: absolute path {rel!r} is not allowed; files must lie inside the package")
    candidate = root / rel
    resolved = candidate.resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise UnsafePathError(f"{what}: {rel!r} resolves to {str(resolved)!r}, outside the package {str(root)!r}")
    return candidate


def _graph_io(model) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    def spec(value) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims: list[Dim] = []
        for d in tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        return TensorSpec(value.name, _ONNX_DTYPES.get(tensor_type.elem_type, f"onnx:{tensor_type.elem_type}"),
                          tuple(dims))

    initializers = {init.name for init in model.graph.initializer}
    inputs = tuple(spec(v) for v in model.graph.input if v.name not in initializers)
    return inputs, tuple(spec(v) for v in model.graph.output)


def _opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)


def _tensors(graph):
    """Every tensor a graph holds, where ONNX Runtime may read external data for it: initializers,
    sparse initializers, and tensor attributes of nodes (a Constant's value), subgraphs included."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        yield from _attribute_tensors(node)


def _attribute_tensors(node):
    for attr in node.attribute:
        yield from ([attr.t] if attr.HasField("t") else [])
        yield from attr.tensors
        for sparse in ([attr.sparse_tensor] if attr.HasField("sparse_tensor") else []) + list(attr.sparse_tensors):
            yield from (sparse.values, sparse.indices)
        for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            yield from _tensors(sub)


def external_locations(model) -> dict[str, str]:
    """ONNX external data of `model`, wherever a tensor keeps it (initializers, a Constant node's
    value, subgraphs, functions): location -> the first tensor stored there."""
    import onnx

    tensors = [*_tensors(model.graph), *(t for f in model.functions for n in f.node for t in _attribute_tensors(n))]
    found: dict[str, str] = {}
    for tensor in tensors:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            found.setdefault(location, tensor.name or "(unnamed constant)")
    return found


def describe_graph(root: str | os.PathLike, file: str, name: str, role: str, modality: str | None = None) -> GraphSpec:
    """Read a graph's I/O, opset and hash (the export side: what the manifest will promise)."""
    import onnx

    path = Path(root) / file
    model = onnx.load(str(path), load_external_data=False)
    inputs, outputs = _graph_io(model)
    external = {loc: sha256_file(path.parent / loc) for loc in external_locations(model)}
    return GraphSpec(name=name, file=file, sha256=sha256_file(path), role=role, inputs=inputs, outputs=outputs,
                     modality=modality, opset=_opset(model), external_data=external)


def write_manifest(root: str | os.PathLike, manifest: dict) -> Path:
    """Write manifest.json (sorted keys, stable bytes) and return its path. The vocabulary file, when
    the manifest names one, must already be in place: its sha256 is recorded (`vocabulary_sha256`)."""
    root = Path(root)
    manifest = {"format_version": FORMAT_VERSION, **manifest}
    if manifest.get("vocabulary"):
        manifest["vocabulary_sha256"] = sha256_file(_inside(root, manifest["vocabulary"], "manifest.vocabulary"))
    path = root / MANIFEST_NAME
    path.write_text(json_text(manifest, indent=2, sort_keys=True) + "\n")  # NaN (a failed quantization): null
    return path


def _names(outputs: dict, key: str) -> tuple[str, ...]:
    """manifest.outputs.<key>: distinct, non-empty strings (they key metrics and label outputs: a
    duplicate would score one class with another's plane)."""
    names = _require(outputs, key, list, "manifest.outputs")
    for name in names:
        if not isinstance(name, str) or not name.strip():
            raise ManifestError(f"manifest.outputs.{key}: every entry must be a non-empty string, got {name!r}")
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ManifestError(f"manifest.outputs.{key}: {duplicated} named more than once")
    return tuple(names)


def bev_grid_text(grid: BevGrid) -> str:
    """A BEV grid for messages: "64x64 (x [0, 51.2] m, y [-25.6, 25.6] m, cell 0.8 m)"."""
    rows, cols = grid.shape
    return (f"{rows}x{cols} (x [{grid.x_min_m:g}, {grid.x_max_m:g}] m, y [{grid.y_min_m:g}, {grid.y_max_m:g}] m, "
            f"cell {grid.cell_m:g} m)")


def _check_head_layout(head: GraphSpec, modalities: tuple[str, ...], scene_labels: tuple, bev_classes: tuple,
                       bev: BevGrid) -> None:
    """The manifest's names must line up with the head graph's axes: one `<modality>_tokens` input per
    modality in the manifest's order (the `present` columns), as many scene labels and BEV classes
    as its logits have channels (else outputs would be labelled with the wrong names), `bev_logits`
    on the rig's BEV grid (rows x cols static and equal to `rig.bev`), and `modality_share`, when
    the head has it, [batch, labels + 1, modalities] with static sizes."""
    tokens = [t.name[: -len("_tokens")] for t in head.inputs if t.name.endswith("_tokens")]
    if tokens and tokens != list(modalities):
        raise ManifestError(f"manifest.modalities {list(modalities)} do not match the head's token inputs, in "
                            f"order: {[f'{m}_tokens' for m in tokens]}")
    channels = {t.name: t.shape[1] for t in head.outputs if len(t.shape) > 1 and isinstance(t.shape[1], int)}
    for key, names, output in (("scene_labels", scene_labels, "scene_logits"),
                               ("bev_classes", bev_classes, "bev_logits")):
        if output in channels and channels[output] != len(names):
            raise ManifestError(f"manifest.outputs.{key} names {len(names)} ({list(names)}), the head's "
                                f"{output!r} has {channels[output]} channels")
    outputs = {t.name: t for t in head.outputs}
    if "bev_logits" in outputs:
        shape = outputs["bev_logits"].shape
        if len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
            raise GraphMismatchError(f"graph 'head'.outputs['bev_logits']: shape {list(shape)} must be [batch, "
                                     f"classes, rows, cols] with static rows and cols (manifest.rig.bev is "
                                     f"{bev_grid_text(bev)})")
        if tuple(shape[2:]) != bev.shape:
            raise ManifestError(f"manifest.rig.bev is a {bev_grid_text(bev)} grid, the head's 'bev_logits' "
                                f"{list(shape)} is {shape[2]}x{shape[3]}: its BEV would be read on the wrong grid")
    if "modality_share" in outputs:
        shape = outputs["modality_share"].shape
        want = (len(scene_labels) + 1, len(modalities))
        if len(shape) != 3 or not all(isinstance(d, int) for d in shape[1:]):
            raise GraphMismatchError(f"graph 'head'.outputs['modality_share']: shape {list(shape)} must be "
                                     f"[batch, {want[0]}, {want[1]}] with static sizes (rows: scene labels "
                                     f"then BEV; columns: manifest.modalities {list(modalities)})")
        if shape[2] != want[1]:
            raise ManifestError(f"manifest.modalities names {want[1]} ({list(modalities)}), the head's "
                                f"'modality_share' {list(shape)} has {shape[2]} columns")
        if shape[1] != want[0]:
            raise ManifestError(f"manifest.outputs.scene_labels names {len(scene_labels)}, so the head's "
                                f"'modality_share' needs {want[0]} rows (labels then BEV), it has {list(shape)}")


#: The values of manifest.outputs.scene_activation / bev_activation the runtime applies.
ACTIVATIONS = ("sigmoid",)


def _check_outputs_extras(outputs: dict, rig: Rig) -> None:
    """The optional manifest.outputs fields say what the runtime does; refuse any that say otherwise."""
    for key in ("scene_activation", "bev_activation"):
        if key in outputs and outputs[key] not in ACTIVATIONS:
            raise ManifestError(f"manifest.outputs.{key}: {outputs[key]!r} is not supported; the runtime turns "
                                f"logits into probabilities with {' / '.join(ACTIVATIONS)} only (export logits)")
    if "bev_grid" in outputs:
        grid = outputs["bev_grid"]
        try:
            parsed = BevGrid(**grid) if isinstance(grid, dict) else None
        except (TypeError, ConfigError) as exc:
            raise ManifestError(f"manifest.outputs.bev_grid: {exc}") from exc
        if parsed != rig.bev:
            raise ManifestError(f"manifest.outputs.bev_grid {grid!r} differs from manifest.rig.bev "
                                f"{bev_grid_text(rig.bev)}: the BEV output is on rig.bev (bev_grid is optional; "
                                f"drop it or make it equal)")


def stage_names(modalities: tuple[str, ...]) -> tuple[str, ...]:
    """The runtime's telemetry stages (what latency_budget_ms may budget)."""
    return (*(f"{m}_{s}" for m in modalities for s in ("preprocess", "encoder")), "head", "overhead", "end_to_end")


def replace_graph(root: str | os.PathLike, name: str, preprocess: dict | None = None) -> ModelPackage:
    """Take a new file for graph `name` into the package at `root`, after it was written over the old
    one (another encoder exported with `fusion_rt.export.onnx_export.export_encoder`, say): its
    manifest entry is read again from the file (hash, inputs, outputs, opset), `preprocess` replaces
    the manifest's when given (a new input size), the export parity record, which covered the old
    graph, is dropped (its file too), and the package is validated like any other."""
    root = Path(root)
    manifest = json.loads((root / MANIFEST_NAME).read_text())
    old = manifest.get("graphs", {}).get(name)
    if not isinstance(old, dict):
        raise ManifestError(f"package {str(root)!r} has no graph {name!r}")
    _inside(root, old.get("file"), f"graph {name!r}")
    manifest["graphs"][name] = describe_graph(root, old["file"], name, old.get("role"), old.get("modality")).to_dict()
    if preprocess is not None:
        manifest["preprocess"] = preprocess
    parity = manifest.get("parity")
    parity_file = None
    if isinstance(parity, dict) and "file" in parity:
        parity_file = _inside(root, parity["file"], "parity.file")
    write_manifest(root, {k: v for k, v in manifest.items() if k not in ("format_version", "parity")})
    if parity_file is not None:
        parity_file.unlink(missing_ok=True)
    return load_package(root)


def _require(d: dict, key: str, kind: type | tuple[type, ...], where: str = "manifest") -> Any:
    if key not in d:
        raise ManifestError(f"{where}: missing field {key!r}")
    if not isinstance(d[key], kind):
        raise ManifestError(f"{where}.{key}: expected {getattr(kind, '__name__', kind)}, got {type(d[key]).__name__}")
    return d[key]


def _dims_match(declared: tuple[Dim, ...], actual: tuple[Dim, ...]) -> bool:
    if len(declared) != len(actual):
        return False
    # A named (dynamic) axis in the manifest must be dynamic in the graph; a static size must match exactly.
    return all((isinstance(d, str) and not isinstance(a, int)) or d == a for d, a in zip(declared, actual, strict=True))


def _check_graph(root: Path, spec: GraphSpec, check_hashes: bool) -> None:
    import onnx

    where = f"graph {spec.name!r}"
    path = _inside(root, spec.file, f"{where}.file")
    if not path.is_file():
        what = "is not a file" if path.exists() else "is missing"
        raise IntegrityError(f"{where}: {spec.file!r} {what} in {str(root)!r}")
    if check_hashes:
        actual = sha256_file(path)
        if actual != spec.sha256:
            raise IntegrityError(f"{where}: sha256 of {spec.file!r} is {actual[:16]}…, the manifest says "
                                 f"{spec.sha256[:16]}… (tampered or stale file; re-export the package)")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError and others from protobuf: any failure is a bad graph
        raise GraphMismatchError(f"{where}: {spec.file!r} is not a readable ONNX model ({exc})") from exc
    # ONNX Runtime reads external data relative to the graph file's folder: check it there.
    for location, tensor in external_locations(model).items():
        what = f"{where} external data of {tensor!r}"
        ext = _inside(root, str(Path(spec.file).parent / location) if location else "", what)
        if not ext.is_file():
            raise IntegrityError(f"{what}: file {location!r} is missing")
        if check_hashes:
            expected = spec.external_data.get(location)
            if expected is None:
                keys = sorted(spec.external_data)
                raise IntegrityError(f"{what}: {location!r} has no sha256 in the manifest "
                                     f"(graphs.{spec.name}.external_data keys are the locations the graph names, "
                                     f"relative to its folder; it has {keys}); re-export the package")
            actual = sha256_file(ext)
            if actual != expected:
                raise IntegrityError(f"{what}: sha256 of {location!r} is {actual[:16]}…, the manifest says "
                                     f"{expected[:16]}… (tampered or stale file; re-export the package)")
    opset = _opset(model)
    if opset < MIN_OPSET:
        raise GraphMismatchError(f"{where}: opset {opset} is below the minimum {MIN_OPSET}")
    if opset != spec.opset:
        raise GraphMismatchError(f"{where}.opset: manifest {spec.opset}, graph {opset}")
    inputs, outputs = _graph_io(model)
    for kind, declared, actual in (("inputs", spec.inputs, inputs), ("outputs", spec.outputs, outputs)):
        if [t.name for t in declared] != [t.name for t in actual]:
            raise GraphMismatchError(f"{where}.{kind}: manifest names {[t.name for t in declared]}, "
                                     f"graph has {[t.name for t in actual]}")
        for d, a in zip(declared, actual, strict=True):
            if d.dtype != a.dtype:
                raise GraphMismatchError(f"{where}.{kind}[{d.name!r}].dtype: manifest {d.dtype}, graph {a.dtype}")
            if not _dims_match(d.shape, a.shape):
                raise GraphMismatchError(f"{where}.{kind}[{d.name!r}].shape: manifest {list(d.shape)}, "
                                         f"graph {list(a.shape)}")


def encoder_input(spec: GraphSpec, modality: str, preprocess: PreprocessConfig,
                  vocabulary: Vocabulary | None) -> tuple[TensorSpec, tuple[int, ...], str]:
    """An encoder graph's one input checked against what the package's preprocessing makes for it:
    (the input, its shape at batch 1, the numpy dtype name the runtime feeds). GraphMismatchError
    naming the graph and field when the graph would not take it (load_package and FusionRuntime)."""
    if len(spec.inputs) != 1:
        raise GraphMismatchError(f"graph {spec.name!r}: an encoder takes one input, it has "
                                 f"{[t.name for t in spec.inputs]}")
    (inp,) = spec.inputs
    want = {"camera": preprocess.camera_shape,
            "radar": (len(preprocess.radar_input_channels), *preprocess.radar_shape),
            "map": preprocess.map_shape,
            "text": (vocabulary.max_tokens if vocabulary else preprocess.text_max_tokens,)}[modality]
    dims = inp.shape
    fits = len(dims) == len(want) + 1 and (isinstance(dims[0], str) or dims[0] == 1) and all(
        isinstance(d, str) or d == w for d, w in zip(dims[1:], want, strict=True))
    if not fits:
        raise GraphMismatchError(f"graph {spec.name!r}.inputs[{inp.name!r}]: shape {list(dims)} does not fit "
                                 f"the package's preprocessing, which makes {list(want)} per frame "
                                 f"(manifest.preprocess{' / vocabulary' if modality == 'text' else ''})")
    dtype = "int64" if modality == "text" else "float32"
    if inp.dtype != dtype:
        raise GraphMismatchError(f"graph {spec.name!r}.inputs[{inp.name!r}].dtype is {inp.dtype}; the runtime "
                                 f"feeds {dtype}")
    return inp, (1, *want), dtype


def _check_preprocess(preprocess: dict, rig: Rig, modalities: tuple[str, ...]) -> PreprocessConfig:
    """The manifest's preprocessing must build (types, sizes, finite grids) before any frame arrives,
    and rasterize radar detections on the rig's radar grid (else every radar frame is refused)."""
    from fusion_rt.preprocess import PreprocessConfig

    try:
        config = PreprocessConfig.from_dict(preprocess)
    except ConfigError as exc:
        raise ManifestError(f"manifest.preprocess: {exc}") from exc
    except (TypeError, ValueError, OverflowError, KeyError) as exc:  # a field of the wrong JSON type
        raise ManifestError(f"manifest.preprocess: {type(exc).__name__}: {exc}") from exc
    grid = (rig.radar.num_range_bins, rig.radar.num_azimuth_bins)
    if "radar" in modalities and tuple(config.radar_shape) != grid:
        raise ManifestError(f"manifest.preprocess.radar_shape {list(config.radar_shape)} differs from the rig's radar "
                            f"grid, manifest.rig.radar num_range_bins x num_azimuth_bins {list(grid)}: radar "
                            "detections are binned on the rig's grid, so the encoder would get none")
    return config


def load_package(path: str | os.PathLike, check_hashes: bool = True) -> ModelPackage:
    """Load and validate a model package directory; raise a `PackageError` subclass on any mismatch."""
    root = Path(path)
    if not root.is_dir():
        raise PackageError(f"model package {str(root)!r} is not a directory")
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise ManifestError(f"{str(manifest_path)!r} is missing: not a fusion-rt model package")
    if manifest_path.stat().st_size > _MAX_MANIFEST_BYTES:
        raise ManifestError(f"{str(manifest_path)!r} is larger than {_MAX_MANIFEST_BYTES} bytes")
    raw = manifest_path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # invalid JSON or UTF-8, nesting too deep, a 5000-digit int
        raise ManifestError(f"{str(manifest_path)!r} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ManifestError(f"{str(manifest_path)!r}: expected a JSON object")
    version = _require(manifest, "format_version", int)
    if version != FORMAT_VERSION:
        raise ManifestError(f"manifest format_version {version} is not supported "
                            f"(this fusion-rt reads {FORMAT_VERSION})")

    try:
        rig = Rig.from_dict(_require(manifest, "rig", dict))
    except ConfigError as exc:
        raise ManifestError(f"manifest.rig: {exc}") from exc
    modalities = tuple(_require(manifest, "modalities", list))
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown or not modalities or len(set(modalities)) != len(modalities):
        raise ManifestError(f"manifest.modalities: {list(modalities)} must be a non-empty subset of "
                            f"{list(MODALITIES)}, each named once")
    _require(manifest, "preprocess", dict)

    graphs: dict[str, GraphSpec] = {}
    for name, g in _require(manifest, "graphs", dict).items():
        where = f"manifest.graphs.{name}"
        if not isinstance(g, dict):
            raise ManifestError(f"{where}: expected an object")
        role = _require(g, "role", str, where)
        opset = _require(g, "opset", int, where)
        if isinstance(opset, bool) or opset < MIN_OPSET:
            raise ManifestError(f"{where}.opset: expected an integer >= {MIN_OPSET}, got {opset!r}")
        external = g.get("external_data", {})
        if not isinstance(external, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in external.items()):
            raise ManifestError(f"{where}.external_data: expected {{file: sha256}}, got {external!r}")
        graphs[name] = GraphSpec(
            name=name, file=_require(g, "file", str, where), sha256=_require(g, "sha256", str, where), role=role,
            inputs=tuple(TensorSpec.from_dict(t, f"{where}.inputs") for t in _require(g, "inputs", list, where)),
            outputs=tuple(TensorSpec.from_dict(t, f"{where}.outputs") for t in _require(g, "outputs", list, where)),
            modality=g.get("modality"), opset=opset, external_data=external,
        )
    for m in modalities:
        if m not in graphs or graphs[m].role != "encoder" or graphs[m].modality != m:
            raise ManifestError(f"manifest.graphs: modality {m!r} needs an encoder graph named {m!r}")
        if graphs[m].tokens_output is None:  # what the runtime, quantize and bench read from an encoder
            raise ManifestError(f"manifest.graphs.{m}.outputs: an encoder needs an output named 'tokens' or a "
                                f"single output; it has {[t.name for t in graphs[m].outputs]}")
    if "head" not in graphs or graphs["head"].role != "head":
        raise ManifestError("manifest.graphs: a graph named 'head' with role 'head' is required")

    outputs = _require(manifest, "outputs", dict)
    scene_labels = _names(outputs, "scene_labels")
    bev_classes = _names(outputs, "bev_classes")
    _check_head_layout(graphs["head"], modalities, scene_labels, bev_classes, rig.bev)
    _check_outputs_extras(outputs, rig)
    max_age = _require(manifest, "max_age_ns", dict)
    for key, value in max_age.items():
        if key not in MODALITIES:  # a misspelt key would leave its modality without a max age
            raise ManifestError(f"manifest.max_age_ns.{key}: {key!r} is not a modality (manifest.modalities "
                                f"{list(modalities)})")
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ManifestError(f"manifest.max_age_ns.{key}: expected a positive integer of nanoseconds, got {value!r}")
    budgets = manifest.get("latency_budget_ms", {})
    if not isinstance(budgets, dict) or not all(
            is_finite_number(v) and v > 0 for v in budgets.values()):
        raise ManifestError(f"manifest.latency_budget_ms: expected positive finite numbers, got {budgets!r}")
    stages, known = stage_names(modalities), stage_names(MODALITIES)
    for key in budgets:
        if key not in known:  # a budget under a misspelt name would never be checked
            raise ManifestError(f"manifest.latency_budget_ms.{key}: {key!r} is not a stage; the stages of this "
                                f"package are {list(stages)}")
    # Stages and ages of modalities the package lacks are left out, not refused: exports before
    # 2026-12-01 wrote the default budgets of all four modalities into every package.
    budgets = {k: v for k, v in budgets.items() if k in stages}
    max_age = {k: v for k, v in max_age.items() if k in modalities}
    preprocess = _check_preprocess(manifest["preprocess"], rig, modalities)
    vocabulary = None
    if "text" in modalities and not manifest.get("vocabulary"):
        raise ManifestError("manifest.vocabulary: the text modality needs a vocabulary file (see README)")
    if manifest.get("vocabulary"):
        vocab = _inside(root, manifest["vocabulary"], "manifest.vocabulary")
        if not vocab.is_file():
            raise IntegrityError(f"manifest.vocabulary: {manifest['vocabulary']!r} is missing")
        expected = _require(manifest, "vocabulary_sha256", str)
        if check_hashes and sha256_file(vocab) != expected:
            raise IntegrityError(f"manifest.vocabulary: sha256 of {manifest['vocabulary']!r} differs from "
                                 f"vocabulary_sha256 {expected[:16]}… (tampered or stale file; re-export the package)")
        if "text" in modalities:  # what the runtime will read: a bad format is refused here, not at its start
            from fusion_rt.preprocess import Vocabulary

            try:
                vocabulary = Vocabulary.load(vocab)
            except ConfigError as exc:
                raise ManifestError(f"manifest.vocabulary {manifest['vocabulary']!r}: {exc}") from exc

    for m in modalities:  # what each encoder gets per frame, as the runtime will make it
        encoder_input(graphs[m], m, preprocess, vocabulary)
    for spec in graphs.values():
        _check_graph(root, spec, check_hashes)

    return ModelPackage(
        root=root, manifest=manifest, sha256=hashlib.sha256(raw).hexdigest(),
        name=str(manifest.get("name", root.name)), precision=str(manifest.get("precision", "fp32")), rig=rig,
        modalities=modalities, graphs=graphs, scene_labels=scene_labels, bev_classes=bev_classes,
        max_age_ns=dict(max_age), latency_budget_ms={k: float(v) for k, v in budgets.items()},
        vocabulary=vocabulary,
    )
