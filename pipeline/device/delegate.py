"""A compiled model's TFLite delegate on the board: find its library, load it into LiteRT, say plainly why not.

A model compiled for an accelerator holds custom ops that only its vendor's delegate can execute,
so without it the compiled model cannot run at all (the plain int8 model still runs on the CPU).
Which library, where it is installed and what to say when it does not load come from the bundle
(the target's ``Delegate``, written by ``pipeline.device.bundle``): this side knows no vendor.
A delegate must be built against the TFLite it is loaded into (see docker/README.md).
"""

from __future__ import annotations

import platform
from pathlib import Path

from pipeline.errors import PipelineError, one_line

LIBRARY_ROOTS = (Path("/usr/lib"), Path("/usr/local/lib"))


def library_path(spec: dict, library: str | None = None) -> str:
    """The library to load: the one asked for, else the spec's for this OS (its first where this OS has none)."""
    libraries = spec["library"]
    return library or libraries.get(platform.system(), next(iter(libraries.values())))


def installed_library_files(pattern: str, roots=LIBRARY_ROOTS) -> list[str]:
    """Where the delegate library is installed on this machine (for the results file and error messages)."""
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(str(p) for p in root.glob(f"**/{pattern}"))
    return found


def delegate_info(spec: dict, library: str | None = None, device: str | None = None) -> dict:
    """What the results record about the delegate: library asked for, device selector, installed files, loaded."""
    return {"library": library_path(spec, library), "device": device or "auto",
            "installed": installed_library_files(spec["installed_glob"]), "explicit_library": library is not None, "loaded": False}


def load_delegate(spec: dict, info: dict):
    """Load the delegate ``info`` describes (``delegate_info``); sets ``info['loaded']``. ``device``: e.g. 'usb', 'pci', 'usb:0'."""
    from pipeline.runtimes.tflite_rt import interpreter_module

    interpreter = interpreter_module()
    if interpreter is None:
        raise PipelineError("no TFLite runtime: pip install ai-edge-litert (see docker/requirements-device.txt)")
    options = {"device": info["device"]} if info["device"] != "auto" else None
    try:
        delegate = interpreter.load_delegate(info["library"], options)
    except (ValueError, OSError, RuntimeError) as exc:
        detail = one_line(exc)
        why = spec["not_installed_hint"] if not info["installed"] and not info["explicit_library"] else spec["not_loaded_hint"]
        raise PipelineError(f"{spec['accelerator']} delegate {info['library']}: failed to load ({detail}); {why}") from None
    info["loaded"] = True
    return delegate
