"""What the SASA Triton kernels compile to on an H100/H200, measured without a GPU.

:func:`kernel_report` compiles each kernel ahead of time for sm_90 (Triton's ``triton.compile`` with a
``GPUTarget("cuda", 90, 32)``, the specs coming from
:func:`sasa_det.layers.local_attention.triton_configs.kernel_build_specs`, so they are typed as a launch
types them), then reads the result with the tools Triton ships: ``ptxas -v`` on the PTX for registers,
stack and spill bytes, and ``cuobjdump -sass`` on the binary for the instruction count, barriers
(``BAR.*``), barriers inside loops (between a backward branch and its target), special-function
instructions (``MUFU``: exp2, log2, reciprocal) and warp shuffles (``SHFL``). These are proxies of speed
that need no GPU: spills and barriers inside the window loop are what made the first kernels slow, and
the instruction count is also what the compile time grows with.

Compile time is measured with an empty Triton cache, wall clock and CPU seconds (the process and its
``ptxas`` children).
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

__all__ = [
    "KernelRecord",
    "PATH_LIMITS",
    "REPORT_LIMITS",
    "check_limits",
    "format_kernel_table",
    "kernel_report",
    "parse_sass",
]

#: Targets of the report: no spills, a bounded code size, few barriers and none inside a CUDA-core
#: kernel's loop, and a compile of a few seconds.
REPORT_LIMITS = {
    "spill_store_bytes": 0,
    "spill_load_bytes": 0,
    "sass_instructions": 3000,
    "barriers": 32,
    "barriers_in_loops": 0,
    "compile_seconds": 10.0,
}
#: Limits that differ by kernel family. A tensor-core product takes its operands from shared memory in
#: the layout the MMA wants, so each product of the halo loop stages one tile there behind a barrier
#: (FlashAttention's kernels do the same); the CUDA-core kernels keep everything in registers.
PATH_LIMITS = {"tensor_core": {"barriers_in_loops": 12}}


@dataclass
class KernelRecord:
    """One kernel compiled for one dtype and head width."""

    kernel: str
    config: str  # the launch settings' label: family, tile, warps
    dtype: str
    head_width: int
    kernel_size: int
    compile_seconds: float
    compile_cpu_seconds: float
    registers: int
    stack_bytes: int
    spill_store_bytes: int
    spill_load_bytes: int
    sass_instructions: int
    barriers: int
    barriers_in_loops: int
    loops: int
    mufu: int
    shuffles: int
    triton: str
    target: str


_INSTRUCTION = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;", re.MULTILINE)
_PREDICATE = re.compile(r"^@!?U?P[T0-9]+\s+")


def parse_sass(sass: str) -> dict[str, int]:
    """Counts from ``cuobjdump -sass`` text: instructions, barriers, loops, barriers inside loops, MUFU, SHFL.

    A loop is the address range between a backward branch (``BRA`` to a lower address) and its target.
    """
    instructions = []
    for address, text in _INSTRUCTION.findall(sass):
        text = _PREDICATE.sub("", text)
        opcode, _, operands = text.partition(" ")
        instructions.append((int(address, 16), opcode, operands))
    loops = []
    for address, opcode, operands in instructions:
        if opcode.startswith("BRA"):
            target = re.search(r"0x([0-9a-f]+)", operands)
            if target and int(target.group(1), 16) < address:
                loops.append((int(target.group(1), 16), address))
    barriers = [address for address, opcode, _ in instructions if opcode.startswith("BAR")]
    in_loops = sum(any(start <= address <= end for start, end in loops) for address in barriers)
    return {
        "sass_instructions": len(instructions),
        "barriers": len(barriers),
        "barriers_in_loops": in_loops,
        "loops": len(loops),
        "mufu": sum(opcode.startswith("MUFU") for _, opcode, _ in instructions),
        "shuffles": sum(opcode.startswith("SHFL") for _, opcode, _ in instructions),
    }


def _parse_ptxas(log: str) -> dict[str, int]:
    def number(pattern: str) -> int:
        found = re.search(pattern, log)
        return int(found.group(1)) if found else 0

    return {
        "registers": number(r"Used (\d+) registers"),
        "stack_bytes": number(r"(\d+) bytes stack frame"),
        "spill_store_bytes": number(r"(\d+) bytes spill stores"),
        "spill_load_bytes": number(r"(\d+) bytes spill loads"),
    }


def _nvidia_tools(capability: int) -> tuple[str, str, str]:
    """``(ptxas, cuobjdump, ptxas --gpu-name)``: the tools this Triton compiles with."""
    import triton
    from triton.backends.nvidia import compiler as nvidia

    bin_dir = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
    ptxas = str(bin_dir / "ptxas")
    if hasattr(nvidia, "get_ptxas"):
        tool = nvidia.get_ptxas(capability)
        ptxas = tool.path if hasattr(tool, "path") else tool[0]
    else:
        with contextlib.suppress(Exception):
            ptxas = triton.knobs.nvidia.ptxas.path
    cuobjdump = str(bin_dir / "cuobjdump")
    with contextlib.suppress(Exception):
        cuobjdump = triton.knobs.nvidia.cuobjdump.path
    arch = (
        nvidia.sm_arch_from_capability(capability) if hasattr(nvidia, "sm_arch_from_capability") else f"sm_{capability}"
    )
    return ptxas, cuobjdump, arch


@contextlib.contextmanager
def _fresh_triton_cache():
    """An empty ``TRITON_CACHE_DIR`` for the duration, so compile times are cold."""
    previous = os.environ.get("TRITON_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="sasa_kernel_report_") as folder:
        os.environ["TRITON_CACHE_DIR"] = folder
        try:
            yield Path(folder)
        finally:
            if previous is None:
                os.environ.pop("TRITON_CACHE_DIR", None)
            else:
                os.environ["TRITON_CACHE_DIR"] = previous


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def kernel_report(
    dtypes: tuple[str, ...] = ("bfloat16", "float32"),
    head_widths: tuple[int, ...] = (8, 16, 32, 64),
    kernel_size: int = 7,
    capability: int = 90,
    progress=None,
    path: str | None = None,
) -> list[KernelRecord]:
    """Compile every candidate kernel of a training step for each dtype and head width; one record per kernel.

    ``path`` keeps one kernel family (``"cuda_core"``/``"tensor_core"``, as ``SASA_TRITON_PATH`` does);
    ``progress(record)`` is called after each kernel (the command line prints a line).
    """
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from sasa_det.layers.local_attention.triton_configs import kernel_build_specs

    target = GPUTarget("cuda", capability, 32)
    ptxas, cuobjdump, arch = _nvidia_tools(capability)
    records = []
    with _fresh_triton_cache() as cache:
        for dtype_name in dtypes:
            dtype = getattr(torch, dtype_name)
            for head_width in head_widths:
                for spec in kernel_build_specs(target, dtype, head_width, kernel_size, path=path):
                    attrs = {(spec.kernel.arg_names.index(name),): [["tt.divisibility", 16]] for name in spec.aligned}
                    source = ASTSource(
                        fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs, attrs=attrs
                    )
                    started, cpu_started = time.perf_counter(), _cpu_seconds()
                    compiled = triton.compile(
                        source, target=target, options={"num_warps": spec.num_warps, "enable_fp_fusion": True}
                    )
                    seconds, cpu_seconds = time.perf_counter() - started, _cpu_seconds() - cpu_started
                    ptx = cache / f"{spec.name}_{spec.config.label.replace(' ', '_')}_{dtype_name}_{head_width}.ptx"
                    cubin = ptx.with_suffix(".cubin")
                    ptx.write_text(compiled.asm["ptx"])
                    cubin.write_bytes(compiled.asm["cubin"])
                    log = subprocess.run(
                        [ptxas, "-v", f"--gpu-name={arch}", str(ptx), "-o", str(ptx.with_suffix(".o"))],
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stderr
                    sass = subprocess.run(
                        [cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True
                    ).stdout
                    record = KernelRecord(
                        kernel=spec.name,
                        config=spec.config.label,
                        dtype=dtype_name,
                        head_width=head_width,
                        kernel_size=kernel_size,
                        compile_seconds=round(seconds, 2),
                        compile_cpu_seconds=round(cpu_seconds, 2),
                        **_parse_ptxas(log),
                        **parse_sass(sass),
                        triton=triton.__version__,
                        target=arch,
                    )
                    records.append(record)
                    if progress is not None:
                        progress(record)
    return records


def check_limits(records: list[KernelRecord], limits: dict | None = None) -> list[str]:
    """One line per record and limit exceeded (empty when all records are within :data:`REPORT_LIMITS` and the
    :data:`PATH_LIMITS` of their kernel family, or within ``limits`` when given)."""
    problems = []
    for record in records:
        values = asdict(record)
        path = record.config.split(" ")[0]
        record_limits = limits if limits is not None else {**REPORT_LIMITS, **PATH_LIMITS.get(path, {})}
        for key, limit in record_limits.items():
            if values[key] > limit:
                problems.append(
                    f"{record.kernel} [{record.config}] {record.dtype} d={record.head_width}: "
                    f"{key} {values[key]} > {limit}"
                )
    return problems


_COLUMNS = [
    ("kernel", "kernel"),
    ("config", "config"),
    ("dtype", "dtype"),
    ("head_width", "d"),
    ("compile_seconds", "compile s"),
    ("registers", "regs"),
    ("spill_store_bytes", "spill B"),
    ("sass_instructions", "SASS instr"),
    ("barriers", "BAR"),
    ("barriers_in_loops", "BAR in loops"),
    ("loops", "loops"),
    ("mufu", "MUFU"),
    ("shuffles", "SHFL"),
]


def format_kernel_table(records: list[KernelRecord]) -> str:
    """A markdown table of the records."""
    lines = ["| " + " | ".join(title for _, title in _COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for record in records:
        values = asdict(record)
        lines.append("| " + " | ".join(str(values[key]) for key, _ in _COLUMNS) + " |")
    return "\n".join(lines)
