"""Triton model repository: config.pbtxt writing, the Python-backend ``model.py``, and checks.

Configs are built as Triton ``ModelConfig`` protobufs (``tritonclient.grpc.model_config_pb2``)
and written with protobuf's text format, so they always parse; ``check_repository`` then parses
every ``config.pbtxt`` back and checks names, dtypes and dims against ``pemt.spec`` and against
the ONNX graph next to it, independently of how the file was written.

Ensemble layout (``layout="ensemble"``), and why it needs two reshape models
-------------------------------------------------------------------------
The CNNs batch per one-second *segment* (``spec.visual_cnn_inputs``: one segment per batch row,
so Triton's dynamic batcher packs segments from many requests into one CNN call); the
transformer batches per *window* of T segments. A Triton ensemble cannot reshape tensors, and a
batching model must return as many rows as it got, so no batching model can turn (B, T, ...)
into (B*T, ...). Triton does allow a batching ensemble to contain *non-batching* models
(``max_batch_size: 0``) as long as the expanded shapes agree: a non-batching model with dims
``[-1, T, ...]`` receives the ensemble tensor with its batch axis. So the ensemble is::

    <name> (ensemble, max_batch_size N; same inputs/outputs as the single model)
      to_segments  (non-batching ONNX Reshape)  frames (B,T,F,S,S,3) -> (B*T,F,S,S,3)
                                                audio  (B,T,M,A)     -> (B*T,M,A)
      visual_cnn   (batching, max_batch_size N*T)  (B*T,F,S,S,3) -> (B*T,Dv)
      audio_cnn    (batching, max_batch_size N*T)  (B*T,M,A)     -> (B*T,Da)
      to_windows   (non-batching ONNX Reshape)  (B*T,Dv) -> (B,T,Dv); (B*T,Da) -> (B,T,Da)
      transformer  (batching, max_batch_size N)   features + masks -> spec.model_outputs

The reshape models are tiny ONNX graphs, so they run on the same backend as the rest (the
onnxruntime backend in NVIDIA's container, or our Python backend that runs ONNX Runtime).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pemt import spec
from pemt.config import ModelConfig

__all__ = [
    "KEEP_VERSIONS",
    "PYTHON_MODEL_PY",
    "RESHAPE_TO_SEGMENTS",
    "RESHAPE_TO_WINDOWS",
    "ModelEntry",
    "RepositoryPlan",
    "check_repository",
    "install_repository",
    "model_versions",
    "parse_config",
    "plan_repository",
    "reshape_onnx",
    "warmup_batch_sizes",
    "write_config",
]

RESHAPE_TO_SEGMENTS = "to_segments"
RESHAPE_TO_WINDOWS = "to_windows"


@dataclass
class ModelEntry:
    """One model directory of the repository, before it is written."""

    name: str
    inputs: list[spec.TensorSpec]  # shapes without the batch axis when max_batch_size > 0
    outputs: list[spec.TensorSpec]
    max_batch_size: int
    kind: str  # "compute" (exported from the model), "reshape", "ensemble"
    preferred_batch_sizes: list[int] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)  # ensemble only


@dataclass
class RepositoryPlan:
    name: str
    layout: str
    entries: list[ModelEntry]


def _segments(t: spec.TensorSpec, name: str | None = None) -> spec.TensorSpec:
    """(T, *rest) window spec -> per-segment spec (*rest)."""
    return spec.TensorSpec(name or t.name, t.dtype, t.shape[1:])


def plan_repository(cfg: ModelConfig, name: str, layout: str, max_batch: int) -> RepositoryPlan:
    """Which models, with which tensors, make up the repository (no files written)."""
    ins, outs = spec.model_inputs(cfg), spec.model_outputs(cfg)
    if layout == "single":
        return RepositoryPlan(
            name,
            layout,
            [ModelEntry(name, ins, outs, max_batch, "compute", _preferred(max_batch))],
        )
    if layout != "ensemble":
        raise ValueError(f"layout={layout!r} is not one of ['single', 'ensemble']")
    t = cfg.media.num_segments
    frames, audio = ins[0], ins[1]
    vin, vout = spec.visual_cnn_inputs(cfg), spec.visual_cnn_outputs(cfg)
    ain, aout = spec.audio_cnn_inputs(cfg), spec.audio_cnn_outputs(cfg)
    tin = spec.transformer_inputs(cfg)
    # non-batching reshape models: shapes include the batch axis (-1)
    to_seg = ModelEntry(
        RESHAPE_TO_SEGMENTS,
        [_with_batch(frames), _with_batch(audio)],
        [
            spec.TensorSpec("frames_segments", "uint8", (-1, *vin[0].shape)),
            spec.TensorSpec("audio_segments", "float32", (-1, *ain[0].shape)),
        ],
        0,
        "reshape",
    )
    to_win = ModelEntry(
        RESHAPE_TO_WINDOWS,
        [_with_batch(vout[0]), _with_batch(aout[0])],
        [
            spec.TensorSpec("visual_windows", "float32", (-1, t, cfg.visual_dim)),
            spec.TensorSpec("audio_windows", "float32", (-1, t, cfg.audio_dim)),
        ],
        0,
        "reshape",
    )
    seg_batch = max_batch * t
    seg_pref = [t * b for b in _preferred(max_batch)]  # whole windows of segments
    vis = ModelEntry(spec.ENSEMBLE_VISUAL_CNN, vin, vout, seg_batch, "compute", seg_pref)
    aud = ModelEntry(spec.ENSEMBLE_AUDIO_CNN, ain, aout, seg_batch, "compute", seg_pref)
    trf = ModelEntry(
        spec.ENSEMBLE_TRANSFORMER, tin, outs, max_batch, "compute", _preferred(max_batch)
    )
    steps = [
        {
            "model_name": RESHAPE_TO_SEGMENTS,
            "input_map": {"frames": "frames", "audio": "audio"},
            "output_map": {
                "frames_segments": "_frames_segments",
                "audio_segments": "_audio_segments",
            },
        },
        {
            "model_name": spec.ENSEMBLE_VISUAL_CNN,
            "input_map": {"frames": "_frames_segments"},
            "output_map": {"visual_features": "_visual_segments"},
        },
        {
            "model_name": spec.ENSEMBLE_AUDIO_CNN,
            "input_map": {"audio": "_audio_segments"},
            "output_map": {"audio_features": "_audio_segments_features"},
        },
        {
            "model_name": RESHAPE_TO_WINDOWS,
            "input_map": {
                "visual_features": "_visual_segments",
                "audio_features": "_audio_segments_features",
            },
            "output_map": {"visual_windows": "_visual_windows", "audio_windows": "_audio_windows"},
        },
        {
            "model_name": spec.ENSEMBLE_TRANSFORMER,
            "input_map": {
                "visual_features": "_visual_windows",
                "audio_features": "_audio_windows",
                "visual_mask": "visual_mask",
                "audio_mask": "audio_mask",
            },
            "output_map": {o.name: o.name for o in outs},
        },
    ]
    ens = ModelEntry(name, ins, outs, max_batch, "ensemble", steps=steps)
    return RepositoryPlan(name, layout, [to_seg, vis, aud, to_win, trf, ens])


def _with_batch(t: spec.TensorSpec) -> spec.TensorSpec:
    return spec.TensorSpec(t.name, t.dtype, (-1, *t.shape))


def _preferred(max_batch: int) -> list[int]:
    return sorted({b for b in (max_batch // 4, max_batch // 2, max_batch) if b > 1})


def reshape_onnx(entry: ModelEntry, path: Path) -> None:
    """A graph of ONNX Reshape nodes: input i -> output i, target shape = output dims."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    elem = {"uint8": TensorProto.UINT8, "float32": TensorProto.FLOAT}
    nodes, inits, gin, gout = [], [], [], []
    for i, o in zip(entry.inputs, entry.outputs, strict=True):
        shape_name = f"{o.name}_shape"
        inits.append(numpy_helper.from_array(np.array(o.shape, dtype=np.int64), shape_name))
        nodes.append(helper.make_node("Reshape", [i.name, shape_name], [o.name]))
        gin.append(helper.make_tensor_value_info(i.name, elem[i.dtype], ["batch", *i.shape[1:]]))
        gout.append(
            helper.make_tensor_value_info(o.name, elem[o.dtype], [f"{o.name}_rows", *o.shape[1:]])
        )
    graph = helper.make_graph(nodes, entry.name, gin, gout, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


# --- config.pbtxt ------------------------------------------------------------------------


def build_config(
    entry: ModelEntry,
    *,
    backend: str,
    engine: bool,
    precision: str,
    instance_count: int = 1,
    max_queue_delay_us: int = 2000,
) -> Any:
    """The Triton ``ModelConfig`` protobuf for ``entry``.

    backend: ``onnxruntime`` (NVIDIA container; GPU instances, and the TensorRT execution
    accelerator unless ``engine`` says a serialized TensorRT plan replaces the ONNX file) or
    ``python`` (CPU instances running ``model.py`` = ONNX Runtime; for CPU-only Triton).
    """
    from tritonclient.grpc import model_config_pb2 as mc

    c = mc.ModelConfig(name=entry.name, max_batch_size=entry.max_batch_size)
    for t, coll in [(x, c.input) for x in entry.inputs] + [(x, c.output) for x in entry.outputs]:
        coll.add(name=t.name, data_type=mc.DataType.Value(t.triton_dtype), dims=list(t.shape))
    if entry.kind == "ensemble":
        c.platform = "ensemble"
        for s in entry.steps:
            step = c.ensemble_scheduling.step.add(model_name=s["model_name"], model_version=-1)
            step.input_map.update(s["input_map"])
            step.output_map.update(s["output_map"])
        return c
    c.version_policy.latest.num_versions = 1
    gpu = backend == "onnxruntime" and entry.kind == "compute"
    kind = mc.ModelInstanceGroup.Kind.KIND_GPU if gpu else mc.ModelInstanceGroup.Kind.KIND_CPU
    c.instance_group.add(kind=kind, count=instance_count)
    if backend == "python":
        c.backend = "python"
    elif engine and entry.kind == "compute":
        c.backend = "tensorrt"
        c.default_model_filename = "model.plan"
    else:
        c.backend = "onnxruntime"
        c.default_model_filename = "model.onnx"
        if gpu:
            acc = c.optimization.execution_accelerators.gpu_execution_accelerator.add(
                name="tensorrt"
            )
            acc.parameters.update(
                {
                    "precision_mode": precision.upper(),
                    "max_workspace_size_bytes": str(4 << 30),
                    "trt_engine_cache_enable": "1",
                    "trt_engine_cache_path": f"/tmp/trt_cache/{entry.name}",
                }
            )
    if entry.max_batch_size > 0:
        c.dynamic_batching.preferred_batch_size.extend(entry.preferred_batch_sizes)
        c.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    if entry.kind == "compute":
        _add_warmup(c, entry, warmup_batch_sizes(entry.max_batch_size, backend))
    return c


def warmup_batch_sizes(max_batch_size: int, backend: str) -> list[int]:
    """Batch sizes Triton runs through a compute model at load, before it reports ready.

    GPU backends warm at 1 and at ``max_batch_size``: the onnxruntime backend's TensorRT
    accelerator builds its engine on the first request and rebuilds it for each batch outside
    the range seen so far, so these two leave one engine for every size in between (minutes of
    building move from the first requests to load time); a TensorRT plan gets its CUDA context
    and memory ready. The python backend (CPU) warms at 1 only: a full CPU batch of the
    ``paper`` model would hold the load for minutes to gain little.
    """
    if max_batch_size <= 0:
        return [1]  # a non-batching model: one request of its exact shape
    return [1] if backend == "python" else sorted({1, max_batch_size})


# a warmup sample of ones for each BOOL input (masks: every segment real); Triton reads it from
# <model>/warmup/<file>, one batch row, raw bytes, duplicated to the sample's batch size
WARMUP_DIR = "warmup"


def _add_warmup(c: Any, entry: ModelEntry, batch_sizes: Sequence[int]) -> None:
    for b in batch_sizes:
        sample = c.model_warmup.add(name=f"{entry.name}_batch_{b}", batch_size=b)
        for t in entry.inputs:
            w = sample.inputs[t.name]
            w.data_type = c.input[[i.name for i in c.input].index(t.name)].data_type
            w.dims.extend(t.shape)
            if t.dtype == "bool":
                w.input_data_file = f"{t.name}.ones"
            else:
                w.random_data = True


_HEADER = """\
# Generated by export/build_engine.py (pemt.export); do not edit by hand.
# Tensor names, dtypes and dims come from pemt.spec and are checked against model.onnx.
"""


def write_config(config: Any, path: Path, note: str = "") -> None:
    """Write ``config.pbtxt`` (``note`` as comment lines under the header) and the warmup data
    files it names (``warmup/<file>``: ones of the input's dtype and dims)."""
    import numpy as np
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    path.parent.mkdir(parents=True, exist_ok=True)
    extra = "".join(f"# {line}\n" for line in note.splitlines())
    path.write_text(
        _HEADER + extra + text_format.MessageToString(config, use_short_repeated_primitives=True)
    )
    for sample in config.model_warmup:
        for w in sample.inputs.values():
            if w.WhichOneof("input_data_type") == "input_data_file":
                dtype = spec.dtype_name(mc.DataType.Name(w.data_type))
                target = path.parent / WARMUP_DIR / w.input_data_file
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(np.ones(tuple(w.dims), dtype).tobytes())


def parse_config(path: Path) -> Any:
    """Parse ``config.pbtxt`` into Triton's ``ModelConfig`` protobuf (raises on bad syntax)."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    return text_format.Parse(Path(path).read_text(), mc.ModelConfig())


# --- Python backend ----------------------------------------------------------------------

PYTHON_MODEL_PY = '''\
"""Triton Python backend: runs model.onnx (next to this file) with ONNX Runtime on CPU.

Generated by export/build_engine.py --triton-backend python. For a CPU-only Triton (such as the
server inside the nvidia-pytriton wheel); NVIDIA's container serves the same model.onnx with its
native onnxruntime backend instead. Names and dtypes are read from the model config, so this
file is the same for every model of the repository. Requests the dynamic batcher groups are
concatenated and run as one ONNX Runtime call.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.batched = int(config.get("max_batch_size", 0)) > 0
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]
        self.out_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"]) for o in config["output"]
        }
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.log_severity_level = 3
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def _run(self, feeds):
        outs = self.session.run(self.outputs, feeds)
        return [np.ascontiguousarray(o, dtype=self.out_dtypes[n]) for n, o in zip(self.outputs, outs)]

    def execute(self, requests):
        feeds = [
            {n: pb_utils.get_input_tensor_by_name(r, n).as_numpy() for n in self.inputs}
            for r in requests
        ]
        try:
            if self.batched and len(feeds) > 1:
                sizes = [f[self.inputs[0]].shape[0] for f in feeds]
                merged = self._run(
                    {n: np.concatenate([f[n] for f in feeds]) for n in self.inputs}
                )
                cuts = np.cumsum(sizes)[:-1]
                results = list(zip(*(np.split(o, cuts) for o in merged)))
            else:
                results = [self._run(f) for f in feeds]
        except Exception as e:  # a bad batch fails its requests, never the server
            err = pb_utils.TritonError(f"onnxruntime: {type(e).__name__}: {e}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=err) for _ in requests]
        return [
            pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(n, o) for n, o in zip(self.outputs, res)]
            )
            for res in results
        ]

    def finalize(self):
        self.session = None
'''


# --- checks --------------------------------------------------------------------------------


def _dims(t: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in t.dims)


def _config_tensors(tensors: Sequence[Any]) -> list[spec.Served]:
    """config.pbtxt inputs or outputs as pemt.spec.Served (dims without the batch axis)."""
    from tritonclient.grpc import model_config_pb2 as mc

    return [(t.name, mc.DataType.Name(t.data_type), list(_dims(t))) for t in tensors]


def _check_onnx(where: str, path: Path, entry: ModelEntry, problems: list[str]) -> None:
    from pemt.export._onnx import onnx_io

    if not path.is_file():
        problems.append(f"{where}: missing {path}")
        return
    gin, gout = onnx_io(path)
    found = spec.check_served(
        entry.inputs,
        entry.outputs,
        [(g.name, g.dtype, g.shape) for g in gin],
        [(g.name, g.dtype, g.shape) for g in gout],
        batch_axis=entry.max_batch_size > 0,
        exact=True,
    )
    problems += [f"{where}: {p}" for p in found]


def check_repository(repo: Path, plan: RepositoryPlan, *, backend: str, engine: bool) -> list[str]:
    """Parse every config.pbtxt of ``plan`` and check it against pemt.spec (via the plan, which
    is built from pemt.spec only), the ONNX graph, and the ensemble's data flow. Returns the list
    of problems (empty = consistent)."""
    problems: list[str] = []
    configs: dict[str, Any] = {}
    for entry in plan.entries:
        d = Path(repo) / entry.name
        where = f"{entry.name}/config.pbtxt"
        try:
            c = parse_config(d / "config.pbtxt")
        except Exception as e:  # noqa: BLE001 - reported as a problem
            problems.append(f"{where}: does not parse as Triton ModelConfig: {e}")
            continue
        configs[entry.name] = c
        if c.name != entry.name:
            problems.append(f"{where}: name {c.name!r}, expected the directory name {entry.name!r}")
        if c.max_batch_size != entry.max_batch_size:
            problems.append(
                f"{where}: max_batch_size {c.max_batch_size}, expected {entry.max_batch_size}"
            )
        found = spec.check_served(
            entry.inputs,
            entry.outputs,
            _config_tensors(c.input),
            _config_tensors(c.output),
            batch_axis=False,
            exact=True,
        )
        problems += [f"{where}: {p}" for p in found]
        if entry.kind == "ensemble":
            if c.platform != "ensemble":
                problems.append(f"{where}: platform {c.platform!r}, expected 'ensemble'")
            continue
        versions = model_versions(d)
        if not versions:
            problems.append(f"{where}: no version folder ({entry.name}/1/ ...)")
            continue
        v = str(versions[-1])  # the one Triton serves (version_policy latest: 1)
        version = d / v
        if backend == "python" and not (version / "model.py").is_file():
            problems.append(f"{where}: python backend without {v}/model.py")
        needs_plan = engine and entry.kind == "compute" and backend != "python"
        if needs_plan and not (version / "model.plan").is_file():
            problems.append(f"{where}: tensorrt backend without {v}/model.plan")
        _check_onnx(f"{entry.name}/{v}/model.onnx", version / "model.onnx", entry, problems)
        if entry.max_batch_size > 0 and not c.HasField("dynamic_batching"):
            problems.append(f"{where}: no dynamic_batching")
        if entry.kind == "compute":
            _check_warmup(where, c, entry, d, problems)
    for entry in plan.entries:
        if entry.kind == "ensemble" and entry.name in configs:
            _check_ensemble(configs[entry.name], configs, problems)
    return problems


def _check_warmup(
    where: str, c: Any, entry: ModelEntry, model_dir: Path, problems: list[str]
) -> None:
    """Warmup samples cover every input with its dtype and dims, fit the batch limit, and the
    data files they name hold exactly one batch row."""
    import numpy as np
    from tritonclient.grpc import model_config_pb2 as mc

    if not c.model_warmup:
        problems.append(f"{where}: no model_warmup")
    for sample in c.model_warmup:
        at = f"{where}: model_warmup {sample.name!r}"
        limit = max(c.max_batch_size, 1)
        if not 1 <= sample.batch_size <= limit:
            problems.append(f"{at}: batch_size {sample.batch_size} outside 1..{limit}")
        served = [
            (k, mc.DataType.Name(w.data_type), list(w.dims)) for k, w in sample.inputs.items()
        ]
        problems += [
            f"{at}: {p}" for p in spec.check_served(entry.inputs, [], served, [], batch_axis=False)
        ]
        for name, w in sample.inputs.items():
            if w.WhichOneof("input_data_type") != "input_data_file":
                continue
            f = model_dir / WARMUP_DIR / w.input_data_file
            dtype = np.dtype(spec.dtype_name(mc.DataType.Name(w.data_type)))
            want = int(np.prod(w.dims)) * dtype.itemsize
            if not f.is_file() or f.stat().st_size != want:
                problems.append(f"{at}: {name} needs {f} of {want} bytes (one batch row)")


# --- versions --------------------------------------------------------------------------------

# versions kept per model: the one served and two to roll back to
KEEP_VERSIONS = 3


def model_versions(model_dir: Path) -> list[int]:
    """The version folders of a model (``<model>/<n>/``, n >= 1), ascending."""
    if not Path(model_dir).is_dir():
        return []
    return sorted(
        int(p.name)
        for p in Path(model_dir).iterdir()
        if p.is_dir() and p.name.isdigit() and int(p.name) > 0
    )


def _config_differences(old: Any, new: Any) -> list[str]:
    """Why versions served under ``old`` could not be served under ``new``."""
    from tritonclient.grpc import model_config_pb2 as mc

    def specs(tensors: Any) -> list[spec.TensorSpec]:
        return [
            spec.TensorSpec(t.name, spec.dtype_name(mc.DataType.Name(t.data_type)), _dims(t))
            for t in tensors
        ]

    diffs = spec.check_served(
        specs(new.input),
        specs(new.output),
        _config_tensors(old.input),
        _config_tensors(old.output),
        batch_axis=False,
        exact=True,
    )
    for field_name in ("max_batch_size", "platform", "backend", "default_model_filename"):
        a, b = getattr(old, field_name), getattr(new, field_name)
        if a != b:
            diffs.append(f"{field_name} {a!r}, now {b!r}")
    old_params = {k: v.string_value for k, v in old.parameters.items()}
    new_params = {k: v.string_value for k, v in new.parameters.items()}
    if old_params != new_params:
        keys = sorted(k for k in old_params.keys() | new_params.keys()
                      if old_params.get(k) != new_params.get(k))  # fmt: skip
        diffs.append(f"parameters {keys} differ (another model config)")
    return diffs


def install_repository(
    stage: Path, out: Path, plan: RepositoryPlan, *, keep: int = KEEP_VERSIONS
) -> dict[str, int]:
    """Move the staged models (``stage/<name>/`` with ``config.pbtxt``, ``warmup/``, ``1/``)
    into the repository ``out``, each as the next version of its model: ``<name>/<n+1>/`` next
    to the versions already there; config.pbtxt and warmup/ are replaced (the version folder
    first, so an interrupted install leaves a servable model). Returns name -> new version.

    Triton's version policy (``latest: 1``; the server's ONNX backend does the same) serves the
    new version; earlier ones stay for a rollback (delete the newest folder and reload), the
    oldest beyond ``keep`` are removed. Raises ValueError, before moving anything, when a model
    already in ``out`` has other tensors, batching, backend or model config than the staged one:
    the new config.pbtxt could not serve its versions."""
    conflicts = []
    for entry in plan.entries:
        dst = Path(out) / entry.name
        if not model_versions(dst):
            continue
        try:
            old = parse_config(dst / "config.pbtxt")
        except Exception as e:  # noqa: BLE001 - reported below
            conflicts.append(f"{dst}/config.pbtxt does not parse ({e})")
            continue
        diffs = _config_differences(old, parse_config(Path(stage) / entry.name / "config.pbtxt"))
        if diffs:
            conflicts.append(f"{dst} (versions {model_versions(dst)}): {'; '.join(diffs)}")
    if conflicts:
        raise ValueError(
            f"{conflicts[0]} (+{len(conflicts) - 1} more): the new config.pbtxt could not serve "
            "the versions already there; export under another --name, or delete that folder"
        )
    versions = {}
    for entry in plan.entries:
        src, dst = Path(stage) / entry.name, Path(out) / entry.name
        dst.mkdir(parents=True, exist_ok=True)
        n = (model_versions(dst) or [0])[-1] + 1
        shutil.move(str(src / "1"), dst / str(n))
        if (dst / WARMUP_DIR).exists():
            shutil.rmtree(dst / WARMUP_DIR)
        if (src / WARMUP_DIR).exists():
            shutil.move(str(src / WARMUP_DIR), dst / WARMUP_DIR)
        os.replace(src / "config.pbtxt", dst / "config.pbtxt")
        for old_version in model_versions(dst)[:-keep]:
            shutil.rmtree(dst / str(old_version))
        versions[entry.name] = n
    return versions


def _check_ensemble(ens: Any, configs: dict[str, Any], problems: list[str]) -> None:
    """Every step model exists; its maps cover its inputs; every tensor is produced before it is
    consumed; producer and consumer agree on dtype and (batch-expanded) dims."""
    from tritonclient.grpc import model_config_pb2 as mc

    def full(t: Any, c: Any) -> tuple[int, ...]:
        return ((-1,) if c.max_batch_size > 0 else ()) + _dims(t)

    where = f"{ens.name}/config.pbtxt"
    avail = {t.name: (t.data_type, full(t, ens)) for t in ens.input}
    for i, step in enumerate(ens.ensemble_scheduling.step):
        c = configs.get(step.model_name)
        if c is None:
            problems.append(
                f"{where}: step {i} uses model {step.model_name!r}, not in the repository"
            )
            continue
        if 0 < c.max_batch_size < ens.max_batch_size:
            problems.append(
                f"{where}: {c.name} max_batch_size {c.max_batch_size} < {ens.max_batch_size}"
            )
        ins = {t.name: t for t in c.input}
        if set(step.input_map) != set(ins):
            problems.append(
                f"{where}: step {c.name} maps inputs {sorted(step.input_map)}, model has {sorted(ins)}"
            )
        for key, tensor in step.input_map.items():
            if tensor not in avail:
                problems.append(
                    f"{where}: step {c.name} reads {tensor!r} before any step produces it"
                )
            elif key in ins:
                dt, dims = avail[tensor]
                want = (ins[key].data_type, full(ins[key], c))
                if dt != want[0] or dims != want[1]:
                    problems.append(
                        f"{where}: {tensor!r} is {mc.DataType.Name(dt)} {list(dims)} but {c.name}.{key} "
                        f"wants {mc.DataType.Name(want[0])} {list(want[1])}"
                    )
        outs = {t.name: t for t in c.output}
        for key, tensor in step.output_map.items():
            if key not in outs:
                problems.append(f"{where}: step {c.name} maps unknown output {key!r}")
                continue
            avail[tensor] = (outs[key].data_type, full(outs[key], c))
    for t in ens.output:
        if t.name not in avail:
            problems.append(f"{where}: output {t.name!r} is produced by no step")
        elif avail[t.name] != (t.data_type, full(t, ens)):
            problems.append(f"{where}: output {t.name!r} dtype/dims differ from the producing step")
