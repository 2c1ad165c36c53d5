"""The machine a benchmark ran on: CPU, cores, memory, OS, Python and library versions."""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

LIBRARIES = ("edgeseg", "numpy", "tensorflow", "tf-keras", "tensorflow-model-optimization",
             "ai-edge-litert", "onnxruntime", "onnx", "tf2onnx", "openvino", "nncf", "rasterio")
"""Distributions whose versions go into the report (missing ones are left out)."""


@dataclass
class MachineInfo:
    """Facts about the machine and software at the time of measuring.

    Attributes:
        cpu: CPU model name (``/proc/cpuinfo``; ``platform.processor()`` elsewhere).
        cores: Logical CPUs of the machine.
        cores_usable: Logical CPUs this process may run on (affinity, containers).
        ram_gb: Total memory in GiB (``None`` where it cannot be read).
        os: Operating system and kernel.
        arch: Machine architecture.
        python: Python version.
        libraries: Distribution name -> version.
        load_average: 1, 5 and 15-minute load averages when the benchmark started (a busy
            machine makes timings slower and noisier).
    """

    cpu: str
    cores: int
    cores_usable: int
    ram_gb: float | None
    os: str
    arch: str
    python: str
    libraries: dict[str, str] = field(default_factory=dict)
    load_average: list[float] = field(default_factory=list)

    def summary(self) -> str:
        """One line: CPU, cores, RAM, OS, Python."""
        ram = f", {self.ram_gb:.0f} GiB RAM" if self.ram_gb else ""
        return (f"{self.cpu}, {self.cores_usable}/{self.cores} cores{ram}, {self.os}, "
                f"Python {self.python}")


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model name from ``/proc/cpuinfo`` (first ``model name`` or ``Hardware`` line)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "Model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def ram_gib(meminfo: Path = Path("/proc/meminfo")) -> float | None:
    """Total memory in GiB from ``/proc/meminfo``, ``None`` where unavailable."""
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    """Installed versions of ``names`` (missing distributions are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def machine_info() -> MachineInfo:
    """Collect :class:`MachineInfo` for this machine now."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else []
    return MachineInfo(
        cpu=cpu_model(), cores=os.cpu_count() or 0, cores_usable=usable or 0, ram_gb=ram_gib(),
        os=f"{platform.system()} {platform.release()}", arch=platform.machine(),
        python=platform.python_version(), libraries=library_versions(), load_average=load,
    )
