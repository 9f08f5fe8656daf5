"""Device description: CPU model from /proc/cpuinfo of real boards, Coral USB ids, never an exception."""

from __future__ import annotations

import json

from pipeline.machine import coral_usb_devices, cpu_model, describe_device

PI4_CPUINFO = """processor\t: 0
BogoMIPS\t: 108.00
CPU implementer\t: 0x41
CPU part\t: 0xd08
processor\t: 1
CPU part\t: 0xd08
processor\t: 2
CPU part\t: 0xd08
processor\t: 3
CPU part\t: 0xd08
Hardware\t: BCM2835
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""
X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B14 96-Core Processor\n"
BIG_LITTLE = "CPU part\t: 0xd05\nCPU part\t: 0xd05\nCPU part\t: 0xd0b\n"


def test_cpu_model_of_common_boards():
    assert cpu_model(PI4_CPUINFO, "Raspberry Pi 4 Model B Rev 1.4\x00") == "Raspberry Pi 4 Model B Rev 1.4 (4× Cortex-A72)"
    assert cpu_model(PI4_CPUINFO, "") == "Raspberry Pi 4 Model B Rev 1.4 (4× Cortex-A72)"  # no device tree: cpuinfo's Model
    assert cpu_model(X86_CPUINFO, "") == "AMD EPYC 9B14 96-Core Processor"
    assert cpu_model(BIG_LITTLE, "Rockchip RK3588") == "Rockchip RK3588 (2× Cortex-A55, 1× Cortex-A76)"


def test_coral_usb_ids_before_and_after_firmware_load(tmp_path):
    for name, (vendor, product) in {"1-1": ("1a6e", "089a"), "1-2": ("18d1", "9302"), "1-3": ("046d", "c52b")}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "idVendor").write_text(vendor + "\n")
        (tmp_path / name / "idProduct").write_text(product + "\n")
    assert coral_usb_devices(tmp_path) == ["1a6e:089a", "18d1:9302"]
    assert coral_usb_devices(tmp_path / "absent") == []


def test_describe_device_is_json_and_names_the_runtimes():
    d = describe_device("bench-pc")
    json.dumps(d)
    assert d["name"] == "bench-pc" and d["cores"] >= 1 and 1 <= d["usable_cores"] <= d["cores"]
    assert d["runtimes"]["numpy"] and d["runtimes"]["python"].count(".") == 2
    assert isinstance(d["cpu"], str) and d["cpu"]
