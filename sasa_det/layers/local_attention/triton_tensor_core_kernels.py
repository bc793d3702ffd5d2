"""Triton kernels of SASA windowed attention on tensor cores (``tl.dot``), for wide heads (used by :mod:`.triton_launch`).

The same attention as :mod:`.triton_kernels` (same memory layout, same ``lse``/``delta``/table-gradient
outputs), computed another way. A program takes a ``BLOCK_H × BLOCK_W`` tile of queries and walks the
``BLOCK_H + k - 1`` rows of its key halo; in each halo row ``NK`` keys (the ``BLOCK_W + k - 1`` halo
columns, padded to a power of two) meet all queries of the tile in one matrix product, and the window is
a mask. That computes ``(BLOCK_H + k - 1)·NK / k²`` times the logits a window needs (4.6× for an 8×8 tile
and k = 7), but on tensor cores, whose throughput for 16-bit inputs is about 15× that of the CUDA cores:
with heads of 32 or more channels the products dominate and this path can win; with 8 channels the
CUDA-core kernels do. Which one runs is decided by timing both (:mod:`.triton_launch`).

Relative logits (Eq. 3, Sec. 2.2's channel split): one small product per tile gives every query's ``k``
row logits ``q[:d/2]·r_row[a]`` and ``k`` column logits ``q[d/2:]·r_col[c]`` (``REL``, ``(M, 2·KP)``:
columns ``0..KP-1`` rows, ``KP..2KP-1`` columns). A query's column term depends on the key's halo column
only, so the ``(M, NK)`` column-logit matrix is built once per tile; the row term is one value per query
and halo row. The backward's key kernel needs the logits of the queries around its keys: the query kernel
stores ``REL`` per query (``rel_logits``, ``(N·heads, H, W, 2·KP)`` in the accumulation dtype) and the key
kernel gathers from it.

Precision: products of 16-bit inputs accumulate in float32 (as the CUDA-core kernels do); the softmax
weights and ``dS`` are rounded to the input dtype before their products with ``V`` and ``K``/``Q``
(FlashAttention's choice). The float32 products with the relative tables (``REL``, its gradient's share
of ``grad_q`` and the table gradients) run as ``AUX``: three TF32 products (``"tf32x3"``, about float32's
accuracy, on tensor cores) for 16-bit inputs; done as exact FMAs instead they were half the code of the
query kernel at d = 64. Float32 and float64 inputs use exact (``"ieee"``) products throughout: that is how
the tests check these kernels against the float64 reference, and why the launcher never picks this path
for them on its own.

Logits are in log2 units inside the softmax (``exp2``); ``lse`` is stored in log2 units, as by the
CUDA-core kernels, so either backward can follow either forward.
"""

import triton
import triton.language as tl


@triton.jit
def _mma(a, b, ACC: tl.constexpr, UPCAST: tl.constexpr):
    """``a @ b`` accumulated in ``ACC``. ``UPCAST``: multiply in ``ACC`` (set under Triton's interpreter for
    bfloat16, whose ``tl.dot`` there multiplies the raw bits; the operands are bfloat16 values either way)."""
    if UPCAST:
        return tl.dot(a.to(ACC), b.to(ACC), input_precision="ieee", out_dtype=ACC)
    return tl.dot(a, b, input_precision="ieee", out_dtype=ACC)


# fmt: off
@triton.jit
def _tables(rel_row, rel_col, HD: tl.constexpr, D: tl.constexpr, KS: tl.constexpr, KP: tl.constexpr,
            ACC: tl.constexpr):
    # fmt: on
    """``(D, 2·KP)``: column ``a < KP`` holds ``r_row[a]`` in channels ``< d/2``; column ``KP + c`` holds
    ``r_col[c]`` in channels ``d/2 .. d-1``; zeros elsewhere (offsets past ``KS``, padded channels)."""
    HALF: tl.constexpr = HD // 2
    ch = tl.arange(0, D)[:, None]
    col = tl.arange(0, 2 * KP)[None, :]
    is_row = col < KP
    offset = tl.where(is_row, col, col - KP)
    used = offset < KS
    rows = tl.load(rel_row + offset * HALF + ch, mask=is_row & used & (ch < HALF), other=0.0)
    cols = tl.load(rel_col + offset * HALF + ch - HALF, mask=(col >= KP) & used & (ch >= HALF) & (ch < HD), other=0.0)
    return (rows + cols).to(ACC)


@triton.jit
def _query_tile(height, width, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's plane ``b``, tile origin ``(y0, x0)``, and per-pixel local row/column, validity and token."""
    tiles_w = tl.cdiv(width, BLOCK_W)
    tiles = tl.cdiv(height, BLOCK_H) * tiles_w
    pid = tl.program_id(0)
    b = pid // tiles
    tile = pid % tiles
    y0 = (tile // tiles_w) * BLOCK_H
    x0 = (tile % tiles_w) * BLOCK_W
    offs = tl.arange(0, BLOCK_H * BLOCK_W)
    ly = offs // BLOCK_W
    lx = offs % BLOCK_W
    valid = (y0 + ly < height) & (x0 + lx < width)
    return b, y0, x0, ly, lx, valid, (y0 + ly) * width + x0 + lx


@triton.jit
def _column_logits(rel, lx, KS: tl.constexpr, KP: tl.constexpr, NK: tl.constexpr):
    """``(M, NK)``: query ``i``'s column logit for halo column ``h`` (``rel[i, KP + h - lx_i]``), or ``-inf``
    where the column is outside the query's window."""
    hx = tl.arange(0, NK)[None, :]
    cols = tl.arange(0, 2 * KP)[None, :]
    shift = hx - lx[:, None]  # window column offset of halo column h for query i
    out = tl.full(shift.shape, float("-inf"), rel.dtype)
    for c in tl.static_range(KS):
        logit = tl.sum(tl.where(cols == KP + c, rel, 0.0), 1)
        out = tl.where(shift == c, logit[:, None], out)
    return out


@triton.jit
def _row_logit(rel, a, KP: tl.constexpr):
    """``(M,)``: ``rel[i, a_i]`` (0 where ``a_i`` is not a window row; such rows are masked anyway)."""
    cols = tl.arange(0, 2 * KP)[None, :]
    return tl.sum(tl.where((cols == a[:, None]) & (a[:, None] < KP), rel, 0.0), 1)


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def forward_tc_kernel(q_ptr, k_ptr, v_ptr, s_t, rel_row, rel_col, out_ptr, o_t, lse_ptr, height, width, heads,
                      KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, NK: tl.constexpr,
                      MASK_PADDING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr, AUX: tl.constexpr):
    # fmt: on
    """``out = softmax(logits) v`` over each query's window and ``lse = log2 sum exp2(logits)``."""
    LOG2E: tl.constexpr = 1.4426950408889634
    R: tl.constexpr = KS // 2
    b, y0, x0, ly, lx, valid, tok = _query_tile(height, width, BLOCK_H, BLOCK_W)
    ch = tl.arange(0, D)
    ch_ok = ch < HD
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    q = tl.load(q_ptr + base + tok[:, None] * s_t + ch[None, :], mask=valid[:, None] & ch_ok[None, :], other=0.0)
    tables = _tables(rel_row, rel_col, HD, D, KS, KP, ACC)
    rel = tl.dot(q.to(ACC), tables, input_precision=AUX, out_dtype=ACC)  # (M, 2KP)
    col_logits = _column_logits(rel, lx, KS, KP, NK)
    hx = tl.arange(0, NK)
    kx = x0 - R + hx
    m = tl.full([BLOCK_H * BLOCK_W], -1.0e30, ACC)
    denom = tl.zeros([BLOCK_H * BLOCK_W], ACC)
    acc = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    for hy in tl.range(0, BLOCK_H + KS - 1):
        ky = y0 - R + hy + 0 * hx  # per key (a vector: the interpreter takes no scalar terms in masks)
        inside = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)
        where = base + (ky * width + kx)[:, None] * s_t + ch[None, :]
        keys = tl.load(k_ptr + where, mask=inside[:, None] & ch_ok[None, :], other=0.0)
        a = hy - ly  # window row offset of this halo row for each query
        s = _mma(q, tl.trans(keys), ACC, UPCAST) + col_logits
        s += _row_logit(rel, a, KP)[:, None]
        keep = ((a >= 0) & (a < KS))[:, None]
        if MASK_PADDING:
            keep = keep & inside[None, :]
        s = tl.where(keep, s * LOG2E, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, 1)
        values = tl.load(v_ptr + where, mask=inside[:, None] & ch_ok[None, :], other=0.0)
        acc = acc * alpha[:, None] + _mma(p.to(values.dtype), values, ACC, UPCAST)
        m = m_new
    denom = tl.where(denom > 0, denom, 1.0)  # tile padding only: never stored
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    tl.store(out_ptr + out_base + tok[:, None] * o_t + ch[None, :], (acc / denom[:, None]).to(out_ptr.dtype.element_ty),
             mask=valid[:, None] & ch_ok[None, :])
    tl.store(lse_ptr + b.to(tl.int64) * plane + tok, m + tl.log2(denom), mask=valid)


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def backward_query_tc_kernel(q_ptr, k_ptr, v_ptr, s_t, rel_row, rel_col, out_ptr, grad_out_ptr, o_t, lse_ptr,
                             delta_ptr, rel_logits_ptr, grad_q_ptr, grad_rel_ptr, height, width, heads,
                             KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, D: tl.constexpr,
                             NK: tl.constexpr, MASK_PADDING: tl.constexpr, BLOCK_H: tl.constexpr,
                             BLOCK_W: tl.constexpr, ACC: tl.constexpr, UPCAST: tl.constexpr, AUX: tl.constexpr):
    # fmt: on
    """``delta``, the per-query relative logits (for the key kernel), ``grad_q`` and this tile's ``(2·KP, D)``
    share of the table gradients (rows ``< KP``: row table, channels ``< d/2``; rows ``KP..``: column table)."""
    LOG2E: tl.constexpr = 1.4426950408889634
    R: tl.constexpr = KS // 2
    b, y0, x0, ly, lx, valid, tok = _query_tile(height, width, BLOCK_H, BLOCK_W)
    ch = tl.arange(0, D)
    ch_ok = ch < HD
    cols = tl.arange(0, 2 * KP)
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    stats = b.to(tl.int64) * plane + tok
    here = valid[:, None] & ch_ok[None, :]
    q = tl.load(q_ptr + base + tok[:, None] * s_t + ch[None, :], mask=here, other=0.0)
    grad_out = tl.load(grad_out_ptr + out_base + tok[:, None] * o_t + ch[None, :], mask=here, other=0.0)
    out = tl.load(out_ptr + out_base + tok[:, None] * o_t + ch[None, :], mask=here, other=0.0)
    delta = tl.sum(grad_out.to(ACC) * out.to(ACC), 1)
    tl.store(delta_ptr + stats, delta, mask=valid)
    lse = tl.load(lse_ptr + stats, mask=valid, other=0.0)
    tables = _tables(rel_row, rel_col, HD, D, KS, KP, ACC)
    q_acc = q.to(ACC)
    rel = tl.dot(q_acc, tables, input_precision=AUX, out_dtype=ACC)
    tl.store(rel_logits_ptr + stats[:, None] * (2 * KP) + cols[None, :], rel, mask=valid[:, None])
    col_logits = _column_logits(rel, lx, KS, KP, NK)
    hx = tl.arange(0, NK)
    kx = x0 - R + hx
    grad_q = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    grad_rel = tl.zeros([BLOCK_H * BLOCK_W, 2 * KP], ACC)  # dS summed per query and window row / column
    ds_by_column = tl.zeros([BLOCK_H * BLOCK_W, NK], ACC)  # dS summed over halo rows, per halo column
    for hy in tl.range(0, BLOCK_H + KS - 1):
        ky = y0 - R + hy + 0 * hx  # per key (a vector: the interpreter takes no scalar terms in masks)
        inside = (ky >= 0) & (ky < height) & (kx >= 0) & (kx < width)
        where = base + (ky * width + kx)[:, None] * s_t + ch[None, :]
        keys = tl.load(k_ptr + where, mask=inside[:, None] & ch_ok[None, :], other=0.0)
        values = tl.load(v_ptr + where, mask=inside[:, None] & ch_ok[None, :], other=0.0)
        a = hy - ly
        s = _mma(q, tl.trans(keys), ACC, UPCAST) + col_logits
        s += _row_logit(rel, a, KP)[:, None]
        keep = ((a >= 0) & (a < KS))[:, None] & valid[:, None]
        if MASK_PADDING:
            keep = keep & inside[None, :]
        p = tl.where(keep, tl.exp2(s * LOG2E - lse[:, None]), 0.0)
        dp = _mma(grad_out, tl.trans(values), ACC, UPCAST)
        ds = p * (dp - delta[:, None])
        grad_q += _mma(ds.to(keys.dtype), keys, ACC, UPCAST)
        ds_by_column += ds
        grad_rel = tl.where(cols[None, :] == a[:, None], grad_rel + tl.sum(ds, 1)[:, None], grad_rel)
    shift = hx[None, :] - lx[:, None]
    for c in tl.static_range(KS):
        grad_rel = tl.where(cols[None, :] == KP + c, tl.sum(tl.where(shift == c, ds_by_column, 0.0), 1)[:, None],
                            grad_rel)
    grad_q += tl.dot(grad_rel, tl.trans(tables), input_precision=AUX, out_dtype=ACC)
    tl.store(grad_q_ptr + base + tok[:, None] * s_t + ch[None, :], grad_q.to(grad_q_ptr.dtype.element_ty), mask=here)
    # this tile's table gradients: grad_rel^T (2KP, M) @ q (M, D)
    grad_tables = tl.dot(tl.trans(grad_rel), q_acc, input_precision=AUX, out_dtype=ACC)
    rows = tl.arange(0, 2 * KP)[:, None]
    tl.store(grad_rel_ptr + tl.program_id(0).to(tl.int64) * (2 * KP * D) + rows * D + ch[None, :], grad_tables)


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def backward_key_tc_kernel(q_ptr, k_ptr, v_ptr, s_t, grad_out_ptr, o_t, lse_ptr, delta_ptr, rel_logits_ptr,
                           grad_k_ptr, grad_v_ptr, height, width, heads,
                           KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, D: tl.constexpr, NK: tl.constexpr,
                           MASK_PADDING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                           ACC: tl.constexpr, UPCAST: tl.constexpr, AUX: tl.constexpr):
    # fmt: on
    """``grad_k``, ``grad_v`` of a tile of keys, from the ``(BLOCK_H + k - 1) × NK`` queries around it."""
    LOG2E: tl.constexpr = 1.4426950408889634
    R: tl.constexpr = KS // 2
    b, y0, x0, ly, lx, valid, tok = _query_tile(height, width, BLOCK_H, BLOCK_W)  # here: key positions
    ch = tl.arange(0, D)
    ch_ok = ch < HD
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    here = valid[:, None] & ch_ok[None, :]
    keys = tl.load(k_ptr + base + tok[:, None] * s_t + ch[None, :], mask=here, other=0.0)
    values = tl.load(v_ptr + base + tok[:, None] * s_t + ch[None, :], mask=here, other=0.0)
    hx = tl.arange(0, NK)
    qx = x0 - R + hx
    column = lx[:, None] - hx[None, :] + 2 * R  # window column of key j in the window of halo query i
    column_ok = (column >= 0) & (column < KS)
    grad_k = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    grad_v = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    for hy in tl.range(0, BLOCK_H + KS - 1):
        qy = y0 - R + hy + 0 * hx  # per query (a vector: the interpreter takes no scalar terms in masks)
        seen = (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        qtok = qy * width + qx
        where = base + qtok[:, None] * s_t + ch[None, :]
        queries = tl.load(q_ptr + where, mask=seen[:, None] & ch_ok[None, :], other=0.0)
        grad_out = tl.load(grad_out_ptr + out_base + qtok[:, None] * o_t + ch[None, :],
                           mask=seen[:, None] & ch_ok[None, :], other=0.0)
        stats = b.to(tl.int64) * plane + qtok
        lse = tl.load(lse_ptr + stats, mask=seen, other=0.0)
        delta = tl.load(delta_ptr + stats, mask=seen, other=0.0)
        row = ly + 2 * R - hy  # window row of key j in the window of this halo row's queries
        keep = ((row >= 0) & (row < KS))[:, None] & column_ok & seen[None, :] & valid[:, None]
        logits = stats[None, :] * (2 * KP)
        rel = tl.load(rel_logits_ptr + logits + row[:, None], mask=keep, other=0.0)
        rel += tl.load(rel_logits_ptr + logits + KP + column, mask=keep, other=0.0)
        s = _mma(keys, tl.trans(queries), ACC, UPCAST) + rel  # (keys, queries)
        p = tl.where(keep, tl.exp2(s * LOG2E - lse[None, :]), 0.0)
        grad_v += _mma(p.to(grad_out.dtype), grad_out, ACC, UPCAST)
        dp = _mma(values, tl.trans(grad_out), ACC, UPCAST)
        ds = p * (dp - delta[None, :])
        grad_k += _mma(ds.to(queries.dtype), queries, ACC, UPCAST)
    tl.store(grad_k_ptr + base + tok[:, None] * s_t + ch[None, :], grad_k.to(grad_k_ptr.dtype.element_ty), mask=here)
    tl.store(grad_v_ptr + base + tok[:, None] * s_t + ch[None, :], grad_v.to(grad_v_ptr.dtype.element_ty), mask=here)
