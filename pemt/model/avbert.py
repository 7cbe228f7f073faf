"""``pemt import avbert``: AVBERT's checkpoints (Lee et al., ICLR 2021) as PEMT checkpoints.

AVBERT's trainer saves ``torch.save`` pickles: a dict with ``model_state_dict`` (fine-tuning
runs) or ``state_dict`` (the released pretrained file), keys prefixed ``avbert.``, plus epoch,
optimizer state and classifier heads. PEMT computes exactly what AVBERT's ``AVBert`` computes
(``pemt.model.pemt``), so every AVBERT tensor has one place in a PEMT model:

- the mapping is one function, :func:`avbert_key` (PEMT key -> AVBERT key), used both ways;
- the shared transformer appears in AVBERT's state dict under four prefixes (``transformer``,
  ``single_visual_transformer``, ``single_audio_transformer``, ``multi_transformer``): the
  aliases must hold the same tensor and are read once;
- ``orthogonal_ms{g}_linear._B`` is AVBERT's cached rotation ``base @ expm(skew(A))``; we
  recompute it from ``A`` and ``base`` and refuse the file if the cache disagrees;
- ``concat_head`` / ``concat_seq_head`` (a fine-tuned classifier) are not part of the embedding
  model; they are written to a second file on request (:class:`AVBertHead`).

The file is read with ``torch.load(weights_only=True)``: only tensors, storages and plain
containers are admitted, so a pickle that would run code is refused before anything runs.
A ``.safetensors`` file with AVBERT's key names is read without any pickle at all.

The config is derived from the tensor shapes (CNN widths and depths, hidden size, FFN size,
rank, sharing mode, position rows); what shapes cannot tell (attention heads, depth of a shared
layer, segments per window, the media recipe) comes from a base config (``paper``) and flags.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pemt.config import ModelConfig, load_config
from pemt.model.pemt import PEMT
from pemt.model.transformer import MODALITIES, rotation

__all__ = [
    "AVBertHead",
    "AVBertImportError",
    "ImportReport",
    "avbert_key",
    "derive_config",
    "from_avbert",
    "import_avbert",
    "read_checkpoint",
    "to_avbert",
]

GROUP = {m: g for g, m in enumerate(MODALITIES)}  # AVBERT's modality groups: 0 v, 1 a, 2 m
_TRANSFORMER_PREFIX = {
    "visual": "single_visual_transformer",
    "audio": "single_audio_transformer",
    "multimodal": "multi_transformer",
}
_SHARED_PREFIX = "transformer"
_ALBERT_LAYER = "encoder.albert_layer_groups.0.albert_layers.0"
_FACTOR = {  # PEMT projection -> AVBERT FactorLinear (full / layers+partial)
    "q": "attention.factor_query",
    "k": "attention.factor_key",
    "v": "attention.factor_value",
    "o": "attention.factor_dense",
    "fc1": "factor_ffn",
    "fc2": "factor_ffn_output",
    "ln1": "attention.LayerNorm",
    "ln2": "full_layer_layer_norm",
}
_ALBERT = {  # layers: an ALBERT layer per transformer
    "q": "attention.query",
    "k": "attention.key",
    "v": "attention.value",
    "o": "attention.dense",
    "fc1": "ffn",
    "fc2": "ffn_output",
    "ln1": "attention.LayerNorm",
    "ln2": "full_layer_layer_norm",
}
_BERT = {  # none: a BERT per transformer
    "q": "attention.self.query",
    "k": "attention.self.key",
    "v": "attention.self.value",
    "o": "attention.output.dense",
    "fc1": "intermediate.dense",
    "fc2": "output.dense",
    "ln1": "attention.output.LayerNorm",
    "ln2": "output.LayerNorm",
}
_TOP = {
    "start.weight": "summary_encoding.bos_embeddings.weight",
    "visual_embed.position.weight": "single_visual_embeddings.position_embeddings.weight",
    "audio_embed.position.weight": "single_audio_embeddings.position_embeddings.weight",
    "multi_embed.position.weight": "multi_embeddings.position_embeddings.weight",
    "multi_embed.token_type.weight": "multi_embeddings.token_type_embeddings.weight",
}
_EMBED_NORM = {
    "visual_embed": "single_visual_embeddings",
    "audio_embed": "single_audio_embeddings",
    "multi_embed": "multi_embeddings",
}
_STEM = {
    "visual_cnn": {"0": "s1.pathway0_stem.conv", "1": "s1.pathway0_stem.bn"},
    "audio_cnn": {
        "0": "s1.stem.conv1",
        "1": "s1.stem.bn1",
        "3": "s1.stem.conv2",
        "4": "s1.stem.bn2",
    },
}
_HEAD_PREFIXES = ("concat_head.", "concat_seq_head.")


class AVBertImportError(ValueError):
    """A checkpoint that cannot become a PEMT model; the message names the problem."""


# --- the key mapping ------------------------------------------------------------------------


def avbert_key(key: str, cfg: ModelConfig) -> str:
    """The AVBERT state-dict key (without ``avbert.``) of PEMT key ``key`` for ``cfg``."""
    head, _, rest = key.partition(".")
    if key in _TOP:
        return _TOP[key]
    if head in _EMBED_NORM:  # visual_embed.norm.weight -> single_visual_embeddings.LayerNorm.weight
        return f"{_EMBED_NORM[head]}.LayerNorm.{rest.partition('.')[2]}"
    if head in ("visual_fc", "visual_norm", "audio_fc", "audio_norm"):
        return key
    if head in _STEM:
        return _cnn_key(head, rest)
    if head == "transformers":
        return _transformer_key(rest, cfg)
    raise KeyError(f"no AVBERT counterpart for PEMT key {key!r}")


def _cnn_key(head: str, rest: str) -> str:
    conv = "visual_conv" if head == "visual_cnn" else "audio_conv"
    parts = rest.split(".")
    if parts[0] == "stem":  # stem.<index>.<tensor>
        return f"{conv}.{_STEM[head][parts[1]]}.{'.'.join(parts[2:])}"
    _, stage, block, module, *tensor = parts  # stages.<i>.<j>.<module>.<tensor>
    res = f"pathway0_res{block}" if head == "visual_cnn" else f"res{block}"
    name = {"proj": "branch1", "proj_bn": "branch1_bn"}.get(module, f"branch2.{module}")
    return f"{conv}.s{int(stage) + 2}.{res}.{name}.{'.'.join(tensor)}"


def _transformer_key(rest: str, cfg: ModelConfig) -> str:
    _, layer, proj, *tail = rest.split(".")  # layers.<i>.<proj>.<...>
    if cfg.sharing in ("full", "layers+partial"):
        base = f"{_SHARED_PREFIX}.{_ALBERT_LAYER}.{_FACTOR[proj]}"
        if proj in ("ln1", "ln2"):  # ln1.shared.weight
            return f"{base}.{tail[1]}"
        kind, *sub = tail
        if kind == "u":  # u.weight / u.bias
            return f"{base}.s_linear.{sub[0]}"
        g = GROUP[sub[0]]
        return {
            "v": f"{base}.ms{g}_linear.weight",
            "a": f"{base}.orthogonal_ms{g}_linear.A",
            "base": f"{base}.orthogonal_ms{g}_linear.base",
        }[kind]
    # plain projections: <proj>.linear.<modality>.<tensor> or ln1.<modality>.<tensor>
    modality, tensor = (tail[1], tail[2]) if proj not in ("ln1", "ln2") else (tail[0], tail[1])
    prefix = _TRANSFORMER_PREFIX[modality]
    if cfg.sharing == "layers":
        return f"{prefix}.{_ALBERT_LAYER}.{_ALBERT[proj]}.{tensor}"
    return f"{prefix}.encoder.layer.{layer}.{_BERT[proj]}.{tensor}"


def _aliases(key: str) -> list[str]:
    """The other names AVBERT's state dict gives a tensor of the shared transformer."""
    if not key.startswith(_SHARED_PREFIX + "."):
        return []
    rest = key[len(_SHARED_PREFIX) :]
    return [p + rest for p in _TRANSFORMER_PREFIX.values()]


# --- reading a checkpoint -------------------------------------------------------------------


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensors of AVBERT checkpoint ``path`` by AVBERT key (``avbert.`` prefix removed;
    classifier heads keep their own names). Never runs code from the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no checkpoint at {p}")
    with open(p, "rb") as f:
        magic = f.read(8)
    if p.suffix == ".safetensors" or (len(magic) == 8 and magic[:2] != b"PK" and magic[0] != 0x80):
        state = _read_safetensors(p)
    else:
        state = _read_pickle(p)
    return _strip_prefix(p, state)


def _read_safetensors(p: Path) -> dict[str, Any]:
    from safetensors import safe_open

    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as e:  # safetensors raises its own types for garbage and truncation
        raise AVBertImportError(f"{p}: not a readable checkpoint ({_first_line(e)})") from None


def _read_pickle(p: Path) -> dict[str, Any]:
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        bad = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(e))
        if bad:
            raise AVBertImportError(
                f"{p}: refused without running it: its pickle asks for {bad.group(1)}, which a "
                "checkpoint of tensors never needs; do not load this file with torch.load"
            ) from None
        raise AVBertImportError(
            f"{p}: not a readable PyTorch checkpoint ({_first_line(e)})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise AVBertImportError(
            f"{p}: not a readable PyTorch checkpoint, truncated or damaged? ({_first_line(e)})"
        ) from None
    if isinstance(obj, dict):
        for name in ("model_state_dict", "state_dict"):
            if isinstance(obj.get(name), dict):
                return obj[name]
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj  # a bare state dict
        raise AVBertImportError(
            f"{p}: holds a dict with keys {sorted(map(str, obj))[:8]} but no 'model_state_dict' "
            "or 'state_dict'; is it a checkpoint written by AVBERT's code?"
        )
    raise AVBertImportError(f"{p}: holds a {type(obj).__name__}, not a checkpoint dict")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def _strip_prefix(p: Path, state: dict[str, Any]) -> dict[str, torch.Tensor]:
    tensors = {str(k): v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if any(k.startswith("avbert.") for k in tensors):
        return {k.removeprefix("avbert."): v for k, v in tensors.items()}
    if "visual_conv.s1.pathway0_stem.conv.weight" in tensors:
        return tensors  # AVBert's own state dict, no wrapper
    sample = sorted(tensors)[:4]
    raise AVBertImportError(
        f"{p}: not an AVBERT checkpoint: no 'avbert.' keys (its keys begin {sample}); "
        "`pemt import avbert` reads files written by AVBERT's code (github.com/sangho-vision/avbert)"
    )


# --- the config -----------------------------------------------------------------------------


def _count(sd: dict[str, torch.Tensor], pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd if (m := rx.fullmatch(k))})


def derive_config(
    sd: dict[str, torch.Tensor],
    base: ModelConfig,
    *,
    heads: int | None = None,
    layers: int | None = None,
    segments: int | None = None,
) -> ModelConfig:
    """The PEMT config of AVBERT state dict ``sd``: sizes from the tensor shapes, the rest
    (heads, depth of a shared layer, segments, media) from ``base`` and the arguments."""
    need = (
        "visual_conv.s1.pathway0_stem.conv.weight",
        "audio_conv.s1.stem.conv1.weight",
        "visual_fc.weight",
        "audio_fc.weight",
        "single_visual_embeddings.position_embeddings.weight",
    )
    missing = [k for k in need if k not in sd]
    if missing:
        kind = (
            "the visual CNN only"
            if "visual_conv.s1.pathway0_stem.conv.weight" in sd
            else "no AVBert"
        )
        raise AVBertImportError(
            f"not a whole AVBert (visual_audio, mid fusion): {kind}; missing {missing}"
        )
    hidden = sd["visual_fc.weight"].shape[0]
    factor = f"{_SHARED_PREFIX}.{_ALBERT_LAYER}.attention.factor_query.ms0_linear.weight"
    albert = f"{_TRANSFORMER_PREFIX['visual']}.{_ALBERT_LAYER}.attention.query.weight"
    bert = f"{_TRANSFORMER_PREFIX['visual']}.encoder.layer.0.attention.self.query.weight"
    rank = base.rank
    if factor in sd:
        sharing = "layers+partial" if sd[factor].shape[0] == hidden else "full"
        rank = sd[factor].shape[0] if sharing == "full" else base.rank  # unused at full rank
        ffn = sd[f"{_SHARED_PREFIX}.{_ALBERT_LAYER}.factor_ffn.s_linear.weight"].shape[0]
        if f"{_SHARED_PREFIX}.{_ALBERT_LAYER}.attention.factor_query.ms2_linear.weight" not in sd:
            raise AVBertImportError(
                "the factored transformer has no multimodal group (ms2); "
                "pemt imports mid fusion with 3 modality groups"
            )
    elif albert in sd:
        sharing, ffn = (
            "layers",
            sd[f"{_TRANSFORMER_PREFIX['visual']}.{_ALBERT_LAYER}.ffn.weight"].shape[0],
        )
    elif bert in sd:
        sharing = "none"
        ffn = sd[
            f"{_TRANSFORMER_PREFIX['visual']}.encoder.layer.0.intermediate.dense.weight"
        ].shape[0]
        counted = _count(sd, rf"{_TRANSFORMER_PREFIX['visual']}\.encoder\.layer\.(\d+)\..*")
        if layers is not None and layers != counted:
            raise AVBertImportError(f"--layers {layers}, but the checkpoint has {counted} layers")
        layers = counted
    else:
        raise AVBertImportError(
            "unsupported transformer layout: pemt imports AVBERT's sharing settings "
            "(across layers, models, decomposition) = (no, no, no), (yes, no, no) and "
            "(yes, yes, yes); this checkpoint has none of their keys"
        )
    cfg_segments = segments if segments is not None else base.media.num_segments
    positions = sd["single_visual_embeddings.position_embeddings.weight"].shape[0]
    if 1 + cfg_segments > positions:
        raise AVBertImportError(
            f"the checkpoint's position tables have {positions} rows, which hold at most "
            f"{positions - 1} segments, but the base config uses {cfg_segments}; pass --segments N "
            f"with N <= {positions - 1}"
        )
    n_heads = heads if heads is not None else base.heads
    if hidden % n_heads:
        raise AVBertImportError(
            f"hidden size {hidden} is not divisible by {n_heads} heads; pass --heads"
        )
    vblocks = tuple(
        _count(sd, rf"visual_conv\.s{k}\.pathway0_res(\d+)\.branch2\.a\.weight")
        for k in range(2, 6)
    )
    ablocks = tuple(
        _count(sd, rf"audio_conv\.s{k}\.res(\d+)\.branch2\.a\.weight") for k in range(2, 6)
    )
    try:
        return base.replace(
            name=base.name if base.name.startswith("avbert") else f"avbert-{base.name}",
            media={"num_segments": cfg_segments},
            visual_width=sd["visual_conv.s1.pathway0_stem.conv.weight"].shape[0],
            visual_blocks=vblocks,
            audio_width=sd["audio_conv.s1.stem.conv1.weight"].shape[0],
            audio_blocks=ablocks,
            hidden=hidden,
            heads=n_heads,
            layers=layers if layers is not None else base.layers,
            ffn=ffn,
            sharing=sharing,
            rank=rank,
            positions=positions,
        )
    except ValueError as e:
        raise AVBertImportError(f"the derived config is invalid: {e}") from None


# --- state dict <-> model -------------------------------------------------------------------


@dataclass
class ImportReport:
    """What :func:`from_avbert` did with each AVBERT tensor."""

    mapped: int = 0  # state-dict entries read into the model
    parameters: int = 0  # parameter elements in the model
    aliases: int = 0  # extra names of the shared transformer, checked equal
    rotations: int = 0  # cached _B, checked against the recomputed rotation
    rotation_error: float = 0.0  # max abs difference of those
    head: list[str] = field(default_factory=list)  # classifier head keys
    config: ModelConfig | None = None

    def lines(self) -> list[str]:
        out = [
            f"mapped {self.mapped} tensors ({self.parameters:,} parameters) into config "
            f"{self.config.name if self.config else '?'} (sharing {self.config.sharing if self.config else '?'})",
        ]
        if self.aliases:
            out.append(f"read once: {self.aliases} aliases of the shared transformer (equal)")
        if self.rotations:
            out.append(
                f"recomputed: {self.rotations} cached rotations _B "
                f"(max difference {self.rotation_error:.1e})"
            )
        if self.head:
            out.append(f"classifier head: {len(self.head)} tensors (concat_head, concat_seq_head)")
        return out


def _rotation_key(key: str) -> str | None:
    m = re.fullmatch(r"(.*\.orthogonal_ms\d+_linear)\._B", key)
    return m.group(1) if m else None


def from_avbert(sd: dict[str, torch.Tensor], cfg: ModelConfig) -> tuple[PEMT, ImportReport]:
    """A PEMT model (eval mode, CPU) holding AVBERT state dict ``sd``; every AVBERT tensor must
    be mapped, an alias, a cached rotation or the classifier head, or this raises naming it."""
    with torch.device("meta"):
        model = PEMT(cfg)
    ours = model.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    missing, mismatched = [], []
    used: set[str] = set()
    for key, ref in ours.items():
        name = avbert_key(key, cfg)
        t = sd.get(name)
        if t is None:
            missing.append(name)
            continue
        used.add(name)
        if tuple(t.shape) != tuple(ref.shape):
            mismatched.append(f"{name}: {tuple(t.shape)}, expected {tuple(ref.shape)}")
            continue
        tensors[key] = t.detach().to(ref.dtype).clone()
    report = ImportReport(config=cfg)
    unmapped, unequal = [], []
    for name, t in sd.items():
        if name in used:
            continue
        if name.startswith(_HEAD_PREFIXES):
            report.head.append(name)
        elif (owner := _alias_owner(name, used)) is not None:
            if not torch.equal(t, sd[owner]):
                unequal.append(name)
            report.aliases += 1
        elif (rot := _rotation_key(name)) is not None and f"{rot}.A" in used:
            b = rotation(sd[f"{rot}.A"].double(), sd[f"{rot}.base"].double())
            report.rotation_error = max(report.rotation_error, float((b - t.double()).abs().max()))
            report.rotations += 1
        else:
            unmapped.append(name)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} tensors: {_names(missing)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shapes do not match: {_names(mismatched)}")
    if unmapped:
        problems.append(f"{len(unmapped)} tensors have no place in the model: {_names(unmapped)}")
    if unequal:
        problems.append(f"aliases of the shared transformer differ: {_names(unequal)}")
    if report.rotation_error > 1e-4:
        problems.append(
            f"cached rotations _B differ from base @ expm(skew(A)) by {report.rotation_error:.2e}; "
            "the file is damaged or not AVBERT's"
        )
    if problems:
        raise AVBertImportError("cannot import: " + "; ".join(problems))
    model.load_state_dict(tensors, strict=True, assign=True)
    report.mapped = len(tensors)
    report.parameters = sum(p.numel() for p in model.parameters())
    return model.eval(), report


def _alias_owner(name: str, used: set[str]) -> str | None:
    for prefix in _TRANSFORMER_PREFIX.values():
        if name.startswith(prefix + "."):
            owner = _SHARED_PREFIX + name[len(prefix) :]
            if owner in used or _rotation_key(owner) is not None:
                return owner
    return None


def _names(keys: list[str], limit: int = 6) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


def to_avbert(model: PEMT, *, prefix: str = "avbert.") -> dict[str, torch.Tensor]:
    """``model`` as AVBERT's state dict (aliases and cached ``_B`` included), the inverse of
    :func:`from_avbert`. For round-trip tests and for running AVBERT's own code on our weights."""
    if model.folded:
        raise ValueError("to_avbert needs the factored model, not a folded one")
    cfg = model.cfg
    out: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        name = avbert_key(key, cfg)
        for n in [name, *_aliases(name)]:
            out[prefix + n] = t
        if name.endswith(".A"):
            rot = name[: -len(".A")]
            base = model.state_dict()[key.replace(".a.", ".base.")]
            b = rotation(t, base)
            for n in [f"{rot}._B", *_aliases(f"{rot}._B")]:
                out[prefix + n] = b
    return out


# --- the classifier head --------------------------------------------------------------------


class AVBertHead(nn.Module):
    """AVBERT's fine-tuned classifier (``MultimodalSequenceClassify``): per segment, a linear
    layer on the pooled CNN features (``concat_head``) and one on the multimodal start tokens
    paired with the segment's tokens (``concat_seq_head``). Eval mode gives softmaxes."""

    def __init__(self, cfg: ModelConfig, classes: int) -> None:
        super().__init__()
        d = cfg.hidden
        self.cfg, self.classes = cfg, classes
        self.clip = nn.Linear(cfg.visual_dim + cfg.audio_dim, classes)
        self.seq_visual = nn.Linear(2 * d, d, bias=False)
        self.seq_audio = nn.Linear(2 * d, d, bias=False)
        self.seq_norm = nn.LayerNorm(d, eps=1e-5)
        self.seq = nn.Linear(d, classes)

    KEYS = {
        "clip.weight": "concat_head.projection.weight",
        "clip.bias": "concat_head.projection.bias",
        "seq_visual.weight": "concat_seq_head.fc1.weight",
        "seq_audio.weight": "concat_seq_head.fc2.weight",
        "seq_norm.weight": "concat_seq_head.ln.weight",
        "seq_norm.bias": "concat_seq_head.ln.bias",
        "seq.weight": "concat_seq_head.projection.weight",
        "seq.bias": "concat_seq_head.projection.bias",
    }

    def forward(
        self, visual: torch.Tensor, audio: torch.Tensor, multi: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """visual (B, T, Dv), audio (B, T, Da) pooled CNN features; multi (B, 2+2T, D) ->
        (clip, seq) class scores (B*T, C), softmaxed in eval mode (rows b*T + t)."""
        b, t = visual.shape[:2]
        clip = self.clip(torch.cat([visual, audio], dim=-1).reshape(b * t, -1))
        mv = torch.cat([multi[:, :1].expand(-1, t, -1), multi[:, 1 : 1 + t]], dim=-1)
        ma = torch.cat([multi[:, 1 + t : 2 + t].expand(-1, t, -1), multi[:, 2 + t :]], dim=-1)
        h = self.seq_norm(
            self.seq_visual(mv.reshape(b * t, -1)) + self.seq_audio(ma.reshape(b * t, -1))
        )
        seq = self.seq(h)
        if not self.training:
            clip, seq = clip.softmax(-1), seq.softmax(-1)
        return clip, seq

    @classmethod
    def from_avbert(cls, sd: dict[str, torch.Tensor], cfg: ModelConfig) -> AVBertHead:
        classes = sd["concat_head.projection.weight"].shape[0]
        head = cls(cfg, classes)
        head.load_state_dict({k: sd[v] for k, v in cls.KEYS.items()}, strict=True)
        return head.eval()


# --- the command ----------------------------------------------------------------------------


def import_avbert(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str = "paper",
    heads: int | None = None,
    layers: int | None = None,
    segments: int | None = None,
    head_out: str | os.PathLike[str] | None = None,
) -> ImportReport:
    """Read AVBERT ``checkpoint``, write PEMT checkpoint ``out`` (and the classifier head to
    ``head_out`` when given and present); returns what was mapped."""
    from safetensors.torch import save_file

    from pemt.model.checkpoint import save

    sd = read_checkpoint(checkpoint)
    cfg = derive_config(sd, load_config(base), heads=heads, layers=layers, segments=segments)
    model, report = from_avbert(sd, cfg)
    save(model, out)
    if head_out is not None:
        if not report.head:
            raise AVBertImportError(f"{checkpoint}: has no classifier head to write to {head_out}")
        head = AVBertHead.from_avbert(sd, cfg)
        meta = {
            "pemt.avbert_head": json.dumps({"classes": head.classes}),
            "pemt.config": cfg.to_json(),
        }
        save_file(
            {k: v.contiguous() for k, v in head.state_dict().items()}, str(head_out), metadata=meta
        )
    return report
