"""Whether int8 pays on this CPU: the ISA flags that decide it, and the one line that says so.

An int8 model is smaller and, where the CPU multiplies 8-bit numbers in one dot-product
instruction, faster than its float32 twin. Those instructions are:

* x86: ``avx512_vnni`` and ``avx_vnni`` (VNNI: four 8-bit products summed into 32 bits),
  ``amx_int8`` (AMX tiles);
* Arm: ``asimddp`` (``SDOT``/``UDOT``) and ``i8mm`` (8-bit matrix multiply).

Without them, an x86 CPU with AVX2 multiplies 8-bit values through 16-bit pair sums
(``vpmaddubsw``) and widening steps, about as many instructions per product as float32 FMA:
LiteRT and OpenVINO then run int8 at about float32 speed (measured 0.96x on an AVX2-only AMD
EPYC), and the accuracy that int8 costs buys nothing. The flags come from ``/proc/cpuinfo``
(``flags`` on x86, ``Features`` on Arm).
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

X86_INT8 = ("avx512_vnni", "avx_vnni", "amx_int8")
"""x86 flags of 8-bit dot-product instructions."""
ARM_INT8 = ("asimddp", "i8mm")
"""Arm flags of 8-bit dot-product instructions."""
X86_FLOAT = ("avx2", "fma", "avx512f")
"""x86 flags that set float32 speed, named beside the int8 ones."""
INT8_MARGIN = 1.05
"""int8 must run at least this many times the speed of float32 to be worth its accuracy."""


@dataclass(frozen=True)
class CpuIsa:
    """The instruction-set facts of a CPU that decide int8 against float32.

    Attributes:
        arch: ``"x86"``, ``"arm"`` or the machine name for any other.
        flags: Every flag the CPU reports.
    """

    arch: str
    flags: frozenset[str]

    @property
    def int8_flags(self) -> tuple[str, ...]:
        """The 8-bit dot-product flags present (:data:`X86_INT8` or :data:`ARM_INT8`)."""
        known = X86_INT8 if self.arch == "x86" else ARM_INT8 if self.arch == "arm" else ()
        return tuple(f for f in known if f in self.flags)

    @property
    def int8_expected(self) -> bool | None:
        """Whether int8 should beat float32 here: ``None`` where the flags do not tell.

        True with 8-bit dot products; False on x86 without them; ``None`` on Arm without
        them (NEON's widening multiplies still gain something, by how much depends on the
        core) and on other machines.
        """
        if self.int8_flags:
            return True
        return False if self.arch == "x86" else None

    def describe(self) -> str:
        """The flags that decide, e.g. ``"x86 avx2 fma, no avx512_vnni, avx_vnni or amx_int8"``."""
        if self.arch == "x86":
            shown = " ".join(f for f in X86_FLOAT if f in self.flags) or "no AVX2"
            if self.int8_flags:
                return f"x86 {shown} {' '.join(self.int8_flags)}"
            return f"x86 {shown}, no {_or(X86_INT8)}"
        if self.arch == "arm":
            if self.int8_flags:
                return f"arm {' '.join(self.int8_flags)}"
            return f"arm, no {_or(ARM_INT8)}"
        return f"{self.arch}, int8 instructions unknown"


def _or(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]


def arch_of(machine: str) -> str:
    """``"x86"``, ``"arm"`` or ``machine`` itself, from ``platform.machine()``'s answer."""
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if m.startswith(("aarch64", "arm")):
        return "arm"
    return m or "unknown"


def parse_cpuinfo(text: str, machine: str) -> CpuIsa:
    """The ISA of ``/proc/cpuinfo``'s text (its first ``flags`` or ``Features`` line).

    Args:
        text: The file's content.
        machine: ``platform.machine()`` (``x86_64``, ``aarch64``, ...).

    Returns:
        The arch and flags (none when the text has no such line).
    """
    flags: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            flags = set(value.split())
            break
    return CpuIsa(arch_of(machine), frozenset(flags))


def cpu_isa(cpuinfo: str | Path = "/proc/cpuinfo", machine: str | None = None) -> CpuIsa:
    """The :class:`CpuIsa` of this machine (no flags where ``/proc/cpuinfo`` cannot be read).

    Args:
        cpuinfo: The file to read.
        machine: The machine name (``None``: ``platform.machine()``).

    Returns:
        The ISA facts.
    """
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text, machine or platform.machine())


def int8_pays(int8_ms: float, float_ms: float, margin: float = INT8_MARGIN) -> bool:
    """Whether an int8 model at ``int8_ms`` per tile is worth it against float at ``float_ms``.

    It must be ``margin`` times as fast: int8 costs accuracy, a tie buys nothing.
    """
    return float_ms >= margin * int8_ms


def int8_line(isa: CpuIsa, int8_ms: float | None = None, float_ms: float | None = None,
              int8_name: str = "int8", float_name: str = "fp32",
              unmeasured: str | None = None) -> str:
    """One line: does int8 beat float32 on this CPU, and the ISA flags that decide it.

    Measured when both times are given (the verdict is then the measurement's), else the
    expectation from the flags.

    Args:
        isa: The CPU (:func:`cpu_isa`).
        int8_ms: The int8 model's time per tile.
        float_ms: The float model's time per tile.
        int8_name: The int8 model's name, for the line.
        float_name: The float model's name.
        unmeasured: Why the times are missing (``None``: no fp32 model beside the int8 one).

    Returns:
        The line, starting ``int8 vs fp32 on this CPU:``.
    """
    head = "int8 vs fp32 on this CPU:"
    flags = f"ISA {isa.describe()}"
    if isa.int8_expected is True:
        why = "8-bit dot products in one instruction"
    elif isa.int8_expected is False:
        why = "8-bit products go through 16-bit multiply-adds, about as slow as fp32"
    else:
        why = "without 8-bit dot products int8 gains depend on the core"
    if int8_ms is not None and float_ms is not None:
        ratio = float_ms / int8_ms
        verdict = ("int8 beats fp32" if int8_pays(int8_ms, float_ms)
                   else "int8 does not beat fp32")
        use = int8_name if int8_pays(int8_ms, float_ms) else float_name
        return (f"{head} {verdict}, {ratio:.2f}x its speed ({int8_name} {int8_ms:.2f} ms, "
                f"{float_name} {float_ms:.2f} ms per tile; {flags}: {why}): use {use}")
    verdict = {True: "int8 is expected to beat fp32", False: "int8 is not expected to beat fp32",
               None: "int8 may or may not beat fp32"}[isa.int8_expected]
    unmeasured = unmeasured or f"no fp32 model beside {int8_name}"
    return f"{head} {verdict} ({flags}: {why}); not measured: {unmeasured}"
