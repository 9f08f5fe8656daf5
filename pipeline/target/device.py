"""Is the target's runtime device on this machine? If not, one line that says so and what to run instead.

Only OpenVINO targets name a device other than the host CPU (NPU, GPU). An Intel NPU needs a
Core Ultra (Meteor Lake or later) CPU and the NPU driver; OpenVINO lists it in
``Core().available_devices`` only then. Where it is absent the pipeline still builds and checks
the int8 IR (on CPU) and benchmarks on CPU; the line points at the CPU recipe and at the
on-device route, so nobody mistakes CPU numbers for NPU numbers.
"""

from __future__ import annotations


def available_devices(runtime: str) -> list[str]:
    """Devices the runtime sees here: OpenVINO asks its Core; every other runtime runs on the host CPU."""
    if runtime != "openvino":
        return ["CPU"]
    try:
        from pipeline.runtimes.openvino_core import core

        return list(core().available_devices)
    except Exception:  # not installed or broken: nothing usable
        return []


def device_status(rules, devices: list[str] | None = None) -> dict:
    """{device, available, devices, message}; ``message`` is the one line to print when the device is absent."""
    devices = available_devices(rules.runtime) if devices is None else list(devices)
    wanted = rules.device.upper()
    available = wanted == "CPU" and rules.runtime != "openvino" or any(d.split(".")[0].upper() == wanted for d in devices)
    message = None
    if not available:
        instead = f"run `python -m pipeline run {rules.alternative}` instead, or " if rules.alternative else ""
        message = (f"{rules.name}: no {wanted} on this machine (OpenVINO sees: {', '.join(devices) or 'none'}), "
                   f"so its numbers here are CPU numbers; {instead}run this recipe where the {wanted} and its driver are installed")
    return {"device": wanted, "available": available, "devices": devices, "message": message}


def benchmark_device(rules, devices: list[str] | None = None) -> str:
    """The device to run the deploy artifact's runtime on here: the target's when present, else CPU."""
    status = device_status(rules, devices)
    return status["device"] if status["available"] else "CPU"
