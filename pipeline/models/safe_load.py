"""Reading a torch.save file without running its code: ``torch.load(weights_only=True)``, every failure one line.

Below both ``checkpoint`` (the pipeline's own files) and ``weights`` (any file the user brings),
which read through it.
"""

from __future__ import annotations

import argparse
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch

from pipeline.errors import PipelineError, one_line

STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model", "state_dict_ema", "model_ema", "ema")
ACCEPTED = ("accepted: a pipeline checkpoint; torch.save(model.state_dict()); a dict holding a state_dict under "
            f"{'/'.join(STATE_DICT_KEYS)}; a .safetensors file")
# harmless classes training scripts pickle beside the weights (torchvision's and timm's `args`)
SAFE_GLOBALS = [argparse.Namespace]


def torch_load(path: Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure as one plain line (``what`` names the config key)."""
    path = Path(path)
    where = f"{what}: {path}"
    if not path.is_file():
        raise PipelineError(f"{where}: no such file")
    if path.stat().st_size == 0:
        raise PipelineError(f"{where}: empty file (0 bytes); {ACCEPTED}")
    if _is_torchscript(path):
        raise PipelineError(f"{where}: a TorchScript archive (torch.jit.save), which cannot be loaded without running its code; "
                            f"save model.state_dict() instead ({ACCEPTED})")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a foreign or corrupt file
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise PipelineError(f"{where}: holds pickled Python objects ({', '.join(unsafe[:2])}), a whole model saved with "
                                f"torch.save(model)? Loading it would run code; save model.state_dict() instead ({ACCEPTED})") from None
        raise PipelineError(f"{where}: not a readable checkpoint (truncated, or not written by torch.save: "
                            f"{one_line(f'{type(exc).__name__}: {exc}', 120)}); {ACCEPTED}") from None


def check_finite(state: dict[str, Any], where: str) -> None:
    """Refuse weights a diverged training left: nan/inf in any float tensor, a negative BatchNorm running_var
    (its sqrt is nan). Loaded as is, they make every prediction nan, or argmax 0, with no error anywhere."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        bad = int((~torch.isfinite(value)).sum())
        if bad:
            raise PipelineError(f"{where}: tensor {key} holds {bad} nan/inf value(s) of {value.numel()}; the training that "
                                "wrote it diverged: use an earlier checkpoint or retrain with a lower learning rate")
        if key.endswith("running_var") and bool((value < 0).any()):
            raise PipelineError(f"{where}: tensor {key} has a negative BatchNorm variance; the file is corrupt: "
                                "use another checkpoint")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives carry their code (``<name>/code/``) and ``constants.pkl``; torch.save files do not."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.split("/", 2)[1:2] in (["code"], ["constants.pkl"]) for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _unsafe_globals(path: Path) -> list[str]:
    """Classes a pickle would construct that weights_only refuses, the root object's first (it is pickled
    first); empty when the file is not a readable pickle. Read with pickletools: nothing is executed."""
    try:
        unsafe = set(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception:
        return []
    unsafe -= {f"{c.__module__}.{c.__qualname__}" for c in SAFE_GLOBALS}
    order: list[str] = []
    try:
        with zipfile.ZipFile(path) as z:
            pickled = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
        order = [arg.replace(" ", ".") for op, arg, _ in pickletools.genops(pickled) if op.name == "GLOBAL"]
    except Exception:  # the legacy (non-zip) format: no order, the names alone
        pass
    seen = [n for n in dict.fromkeys(order) if n in unsafe]
    return seen + sorted(unsafe - set(seen))
