"""Weights the user brings (``teacher.checkpoint``, ``student.checkpoint``, ``python -m pipeline export MODEL``).

Accepted, all read without running code (``torch.load(weights_only=True)``, or safetensors):

* the pipeline's own checkpoint (it names its architecture);
* a plain state_dict (``torch.save(model.state_dict(), f)``, torchvision's and timm's weight files);
* a training script's dict holding one under ``STATE_DICT_KEYS`` (torchvision's reference scripts
  save ``model``/``model_ema``, timm's ``state_dict``/``state_dict_ema``, Lightning ``state_dict``),
  with DDP ``module.`` and ``torch.compile`` ``_orig_mod.`` prefixes removed;
* a ``.safetensors`` file (Hugging Face / timm weights).

Everything but the first needs ``arch`` (+ ``arch_args``) in the config. A classifier whose class
count differs is re-initialised only with ``head: reset``; any other mismatch is one line naming
the keys and shapes. A whole pickled model, a TorchScript archive, an empty or truncated file
each get one plain line saying what was found and what is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pipeline.errors import PipelineError, one_line
from pipeline.models.checkpoint import REQUIRED, check_provenance
from pipeline.models.safe_load import ACCEPTED, STATE_DICT_KEYS, check_finite, torch_load

PREFIXES = ("module.", "_orig_mod.")  # DDP / DataParallel, torch.compile


@dataclass
class Weights:
    """A state_dict and what it came from: ``kind`` (pipeline | state_dict | safetensors), the dict key it
    was under, the architecture the file names (if any), the pipeline checkpoint's metadata."""

    state_dict: dict[str, torch.Tensor]
    kind: str
    key: str | None = None
    arch: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def read_weights(path: Path, what: str) -> Weights:
    """Any accepted file as a state_dict (prefixes removed) and its provenance."""
    path = Path(path)
    weights = _read_weights(path, what)
    check_finite(weights.state_dict, f"{what}: {path}")
    return weights


def _read_weights(path: Path, what: str) -> Weights:
    if path.suffix == ".safetensors":
        return Weights(_read_safetensors(path, what), "safetensors")
    blob = torch_load(path, what)
    if isinstance(blob, dict) and all(k in blob for k in REQUIRED):
        check_provenance(blob, f"{what}: {path}")
        meta = {k: v for k, v in blob.items() if k != "state_dict"}
        return Weights(dict(blob["state_dict"]), "pipeline", arch=blob["arch"], meta=meta)
    if _is_state_dict(blob):
        return Weights(strip_prefixes(blob), "state_dict")
    if isinstance(blob, dict):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(blob.get(key)):
                arch = blob.get("arch") if isinstance(blob.get("arch"), str) else None  # timm's train.py records it
                return Weights(strip_prefixes(blob[key]), "state_dict", key=key, arch=arch)
        keys = ", ".join(map(str, list(blob)[:6]))
        raise PipelineError(f"{what}: {path}: a dict with keys {keys} but no state_dict under any of them; {ACCEPTED}")
    raise PipelineError(f"{what}: {path}: holds a {type(blob).__name__}, not weights; {ACCEPTED}")


def strip_prefixes(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors only (torchvision's EMA adds ``n_averaged``), without DDP/compile prefixes."""
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or key == "n_averaged":
            continue
        while key.startswith(PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def classifier_paths(model: nn.Module) -> list[str]:
    """The head ``head: reset`` re-initialises: timm's recorded classifier, else the last Linear."""
    from pipeline.models.timm_models import classifier_paths as timm_heads

    if paths := timm_heads(model):
        return paths
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    return linears[-1:]


def fit_weights(model: nn.Module, state: dict[str, torch.Tensor], *, head: str, what: str, path: Path, arch: str) -> list[str]:
    """Load ``state`` into ``model`` exactly, except the classifier with ``head: reset``; returns the keys re-initialised.

    Anything that does not fit is one line: the mismatched shapes first (at most 3), then missing
    and unexpected keys, and the key to set."""
    heads = tuple(f"{p}." for p in classifier_paths(model))
    own = model.state_dict()
    key_map = getattr(model, "key_map", {})  # a library's own key names -> the pipeline's (timm_models)
    state = _align({key_map.get(k, k): v for k, v in state.items()}, own)
    reset = sorted(k for k in own if k.startswith(heads)) if head == "reset" else []
    state = {k: v for k, v in state.items() if k not in reset}
    shapes = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    missing = [k for k in own if k not in state and k not in reset and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in own]
    if shapes or missing or unexpected:
        parts = []
        if shapes:
            parts.append("shape mismatch " + ", ".join(f"{k} {list(state[k].shape)} vs {list(own[k].shape)}" for k in shapes[:3])
                         + (f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""))
        if missing:
            parts.append(f"{len(missing)} missing ({', '.join(missing[:3])}{', …' if len(missing) > 3 else ''})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}{', …' if len(unexpected) > 3 else ''})")
        raise PipelineError(f"{what}: {path}: weights do not fit {arch}: {'; '.join(parts)}; "
                            f"{_fix(what.rsplit('.', 1)[0], shapes, missing, unexpected, heads, state, own)}")
    model.load_state_dict(state, strict=False)
    return reset


def _fix(section: str, shapes: list[str], missing: list[str], unexpected: list[str], heads: tuple[str, ...],
         state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> str:
    """The one config change that would make the weights fit, as far as the mismatch tells."""
    if not missing and not unexpected:
        first_conv = next((k for k, v in own.items() if v.ndim == 4), None)
        rest = [k for k in shapes if k != first_conv]
        if first_conv in shapes and state[first_conv].shape[0] == own[first_conv].shape[0] and not rest:
            return (f"the checkpoint reads {state[first_conv].shape[1]}-channel images, the data has {own[first_conv].shape[1]}: "
                    f"set data.channels: {state[first_conv].shape[1]}")
        if all(k.startswith(heads) for k in shapes):
            return f"the classifier has another class count: set {section}.head: reset to re-initialise it"
    return f"set {section}.arch (and arch_args) to the checkpoint's architecture"


def _read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise PipelineError(f"{what}: {path}: no such file")
    try:
        return strip_prefixes(load_file(str(path), device="cpu"))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PipelineError(f"{what}: {path}: not a readable safetensors file ({one_line(str(exc), 120)}); {ACCEPTED}") from None


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in value.items())


def _align(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop one leading module name every key shares (Lightning's ``model.``) when that, and only that, makes keys match."""
    if any(k in own for k in state):
        return state
    heads = {k.split(".", 1)[0] for k in state}
    if len(heads) == 1 and all("." in k for k in state):
        stripped = {k.split(".", 1)[1]: v for k, v in state.items()}
        if any(k in own for k in stripped):
            return stripped
    return state


def model_from_checkpoint(spec, *, section: str, num_classes: int, in_channels: int) -> tuple[nn.Module, dict[str, Any]]:
    """The model ``spec.checkpoint`` holds, built for this data (``spec``: a ModelSpec; ``section``: teacher | student).

    A pipeline checkpoint names its architecture; ``arch`` set in the config must agree with it.
    Any other form takes ``arch``/``arch_args`` from the config, which must then be set. Returns the
    model (eval mode) and its provenance for the manifest: file, sha256, format, arch, head keys reset."""
    from pipeline.artifacts import sha256_file
    from pipeline.models import build_model

    path = Path(spec.checkpoint).expanduser()
    what = f"{section}.checkpoint"
    weights = read_weights(path, what)
    arch_set = "arch" in spec.model_fields_set
    if weights.kind == "pipeline":
        arch, arch_args = weights.arch, dict(weights.meta.get("arch_args") or {})
        if arch_set and not same_arch(spec.arch, arch):
            raise PipelineError(f"{what}: {path}: a {arch} checkpoint, but {section}.arch is {spec.arch}; "
                                f"set {section}.arch: {arch} (or remove it: a pipeline checkpoint names its architecture)")
    else:
        found = "a state_dict" + (f" under '{weights.key}'" if weights.key else "") if weights.kind == "state_dict" else "a safetensors file"
        if not arch_set:
            raise PipelineError(f"{what}: {path}: {found} does not say which architecture it belongs to; "
                                f"set {section}.arch (e.g. torchvision:resnet18, timm:tf_mobilenetv3_small_minimal_100) and arch_args")
        if weights.arch and not same_arch(spec.arch, weights.arch):
            raise PipelineError(f"{what}: {path}: the file records arch '{weights.arch}', but {section}.arch is {spec.arch}; "
                                f"set {section}.arch to the checkpoint's architecture")
        arch, arch_args = spec.arch, dict(spec.arch_args)
    model = build_model(arch, num_classes, in_channels, arch_args)
    reset = fit_weights(model, weights.state_dict, head=spec.head, what=what, path=path, arch=arch)
    if weights.meta.get("stage_names"):
        model.stage_names = list(weights.meta["stage_names"])
    info = {"file": str(path), "sha256": sha256_file(path), "format": weights.kind, "key": weights.key,
            "arch": arch, "arch_args": arch_args, "head_reset": reset}
    return model.eval(), info


def same_arch(configured: str, recorded: str) -> bool:
    """``timm:mobilenetv3_small_100`` matches a file recording ``mobilenetv3_small_100`` (timm's train.py) or a tagged name."""
    strip = lambda a: a.split(":", 1)[-1].split(".", 1)[0]  # noqa: E731
    return configured == recorded or strip(configured) == strip(recorded)
