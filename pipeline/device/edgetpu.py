"""The Coral Edge TPU delegate: find ``libedgetpu``, load it into LiteRT, say plainly why not.

A ``*_edgetpu.tflite`` holds one ``edgetpu-custom-op`` that only this delegate can execute, so
without it the compiled model cannot run at all (the plain int8 model still runs on the CPU).
A delegate must be built against the TFLite it is loaded into: Coral's 2021 apt package
predates LiteRT; docker/coral/ installs a rebuild against TF 2.19 by default (see its README).
"""

from __future__ import annotations

import platform
from pathlib import Path

from pipeline.errors import PipelineError, one_line

LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}


def library_path(library: str | None = None) -> str:
    return library or LIBRARY.get(platform.system(), "libedgetpu.so.1")


def installed_library_files() -> list[str]:
    """Where libedgetpu is installed on this machine (for the results file and error messages)."""
    roots = [Path("/usr/lib"), Path("/usr/local/lib")]
    found = []
    for root in roots:
        if root.is_dir():
            found += sorted(str(p) for p in root.glob("**/libedgetpu.so*"))
    return found


def delegate_info(library: str | None = None, device: str | None = None) -> dict:
    """What the results record about the delegate: library asked for, device selector, installed files, loaded."""
    return {"library": library_path(library), "device": device or "auto", "installed": installed_library_files(),
            "explicit_library": library is not None, "loaded": False}


def load_edgetpu_delegate(info: dict):
    """Load the delegate ``info`` describes (``delegate_info``); sets ``info['loaded']``. ``device``: 'usb', 'pci', 'usb:0'."""
    from pipeline.runtimes.tflite_rt import interpreter_module

    interpreter = interpreter_module()
    if interpreter is None:
        raise PipelineError("no TFLite runtime: pip install ai-edge-litert (see docker/requirements-device.txt)")
    options = {"device": info["device"]} if info["device"] != "auto" else None
    try:
        delegate = interpreter.load_delegate(info["library"], options)
    except (ValueError, OSError, RuntimeError) as exc:
        detail = one_line(exc)
        if not info["installed"] and not info["explicit_library"]:
            why = "libedgetpu is not installed (use the docker/coral image, or install libedgetpu1-std)"
        else:
            why = ("no Edge TPU visible (plugged in? container started with --device /dev/bus/usb?) "
                   "or a libedgetpu built for another TFLite version (see docker/README.md)")
        raise PipelineError(f"Edge TPU delegate {info['library']}: failed to load ({detail}); {why}") from None
    info["loaded"] = True
    return delegate
