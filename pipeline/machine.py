"""What machine produced a result: CPU model, cores, memory, OS, runtimes, accelerators.

Read from ``/proc``, ``/sys`` and ``/etc/os-release`` with the standard library only, so it
works the same on a Raspberry Pi, inside a container and on the host. Every field is best
effort: a board that hides something gets ``None``, never an exception.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

from pipeline.runtimes import RUNTIMES, all_cores

# ARM "CPU part" ids (/proc/cpuinfo) of the cores found on common boards
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77", "0xd41": "Cortex-A78", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710",
}
# the board's numpy and every on-device runtime's distributions (pipeline.runtimes.RUNTIMES; torch stays on the host)
RUNTIME_PACKAGES = ("numpy", *(p for e in RUNTIMES.values() if e.name != "torch" for p in e.packages))
# USB ids of the Coral USB Accelerator: before (Global Unichip) and after its firmware is loaded (Google)
CORAL_USB_IDS = {("1a6e", "089a"), ("18d1", "9302")}


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def cpu_model(cpuinfo: str | None = None, dt_model: str | None = None) -> str:
    """'AMD EPYC 9B14', or for ARM boards 'Raspberry Pi 4 Model B Rev 1.4 (4× Cortex-A72)'."""
    cpuinfo = _read("/proc/cpuinfo") if cpuinfo is None else cpuinfo
    dt_model = _read("/proc/device-tree/model") if dt_model is None else dt_model
    fields: dict[str, list[str]] = {}
    for line in (cpuinfo or "").splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), []).append(value.strip())
    if "model name" in fields:
        return fields["model name"][0]
    board = (dt_model or "").strip("\x00\n ") or (fields.get("Model") or [""])[0]
    parts = fields.get("CPU part", [])
    cores = ""
    if parts:
        names = [ARM_PARTS.get(p.lower(), f"ARM part {p}") for p in parts]
        cores = ", ".join(f"{names.count(n)}× {n}" for n in dict.fromkeys(names))
    if board and cores:
        return f"{board} ({cores})"
    return board or cores or platform.processor() or platform.machine()


def os_name() -> str:
    release = _read("/etc/os-release") or ""
    for line in release.splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}"


def memory_mb() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def runtime_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in RUNTIME_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def coral_usb_devices(sys_usb: Path = Path("/sys/bus/usb/devices")) -> list[str]:
    """'vendor:product' of every Coral USB Accelerator visible (needs /dev/bus/usb passed into a container)."""
    found = []
    for dev in sorted(sys_usb.glob("*")) if sys_usb.is_dir() else []:
        vendor, product = _read(str(dev / "idVendor")), _read(str(dev / "idProduct"))
        if vendor and product and (vendor.strip(), product.strip()) in CORAL_USB_IDS:
            found.append(f"{vendor.strip()}:{product.strip()}")
    return found


def describe_device(name: str | None = None) -> dict:
    """The ``device`` block of a results file; ``name`` labels the device's rows in reports."""
    return {
        "name": name or platform.node() or "device",
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": all_cores(),
        "memory_mb": memory_mb(),
        "arch": platform.machine(),
        "os": os_name(),
        "kernel": platform.release(),
        "container": Path("/.dockerenv").exists() or Path("/run/.containerenv").exists(),
        "runtimes": runtime_versions(),
        "coral_usb": coral_usb_devices(),
    }
