"""Which CPU a stage or a benchmark ran on: its model and the vector units its speed depends on. Timings are only
comparable on the same CPU, and the machines lent to this project have changed between sessions (a Xeon with AMX,
an EPYC with AVX512-BF16, an EPYC with AVX2 only)."""

from __future__ import annotations

import platform
from pathlib import Path

SPEED_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")  # the flags fp32 / bf16 matmul speed follows


def cpu_description(cpuinfo: str | None = None) -> str:
    """"MODEL (FEATURE, ...)" from /proc/cpuinfo (``cpuinfo``: its text), e.g. "AMD EPYC (avx2)"; where there is
    no /proc/cpuinfo, the platform's processor name."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(errors="replace") if path.is_file() else ""
    fields = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())  # the first processor's
    model = fields.get("model name") or platform.processor() or platform.machine() or "unknown CPU"
    if "flags" not in fields:  # not an x86 /proc/cpuinfo: the vector units are unknown
        return model
    flags = set(fields["flags"].split())
    features = [feature for feature in SPEED_FEATURES if feature in flags] or [f"no {SPEED_FEATURES[0]}"]
    return f"{model} ({', '.join(features)})"
