"""The kernel report: the SASA Triton kernels compiled for sm_90 on this CPU, held to the report's limits."""

from __future__ import annotations

import importlib.util

import pytest

from sasa_det.analysis.kernel_report import REPORT_LIMITS, check_limits, format_kernel_table, kernel_report, parse_sass

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
        /*0010*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0020*/                   FFMA R2, R3, R4, R2 ;
        /*0030*/                   MUFU.EX2 R5, R6 ;
        /*0040*/                   BAR.SYNC 0x0 ;
        /*0050*/              @!P0 BRA 0x20 ;
        /*0060*/                   SHFL.BFLY PT, R7, R8, 0x1, 0x1f ;
        /*0070*/                   EXIT ;
"""


def test_sass_counts_loops_and_the_barriers_inside_them():
    counts = parse_sass(SASS)
    assert counts == {
        "sass_instructions": 8,
        "barriers": 2,
        "barriers_in_loops": 1,
        "loops": 1,
        "mufu": 1,
        "shuffles": 1,
    }


@needs_triton
def test_kernels_at_head_width_8_are_within_the_limits():
    records = kernel_report(dtypes=("bfloat16",), head_widths=(8,))
    kernels = ["forward_kernel", "backward_query_kernel", "backward_key_kernel"]
    assert [record.kernel for record in records] == kernels * 2  # two CUDA-core candidates, no tensor cores
    assert all(record.config.startswith("cuda_core") for record in records)
    assert all(record.registers > 0 and record.sass_instructions > 100 for record in records)
    assert all(record.loops >= 1 for record in records)  # the window loop is rolled, not unrolled k² times
    assert check_limits(records) == [], format_kernel_table(records)


@needs_triton
def test_tensor_core_kernels_at_head_width_32_are_within_the_limits():
    records = kernel_report(dtypes=("bfloat16",), head_widths=(32,), path="tensor_core")
    assert all(record.config.startswith("tensor_core") for record in records)
    assert [record.kernel for record in records] == [
        "forward_tc_kernel",
        "backward_query_tc_kernel",
        "backward_key_tc_kernel",
    ] * 2
    assert all(record.loops >= 1 for record in records)  # the halo-row loop is rolled
    assert check_limits(records) == [], format_kernel_table(records)


def test_limits_name_the_kernel_and_the_value():
    from sasa_det.analysis.kernel_report import KernelRecord

    record = KernelRecord(
        "forward_kernel",
        "cuda_core 8x16 w4",
        "bfloat16",
        8,
        7,
        1.0,
        1.0,
        100,
        0,
        24,
        24,
        5000,
        40,
        2,
        1,
        10,
        0,
        "3.x",
        "sm_90a",
    )
    problems = check_limits([record])
    assert "forward_kernel [cuda_core 8x16 w4] bfloat16 d=8: spill_store_bytes 24 > 0" in problems
    assert (
        f"forward_kernel [cuda_core 8x16 w4] bfloat16 d=8: sass_instructions 5000 > "
        f"{REPORT_LIMITS['sass_instructions']}"
    ) in problems
    assert len(problems) == 5  # spill stores, spill loads, instructions, barriers, barriers in loops
    # tensor-core kernels stage their product operands behind barriers inside the loop: a few are allowed
    tensor_core = KernelRecord(
        "forward_tc_kernel",
        "tensor_core 8x8 w4",
        "bfloat16",
        32,
        7,
        1.0,
        1.0,
        100,
        0,
        0,
        0,
        1300,
        11,
        3,
        1,
        10,
        0,
        "3.x",
        "sm_90a",
    )
    assert check_limits([tensor_core]) == []
    assert check_limits([KernelRecord(**{**tensor_core.__dict__, "barriers_in_loops": 13})]) == [
        "forward_tc_kernel [tensor_core 8x8 w4] bfloat16 d=32: barriers_in_loops 13 > 12"
    ]
