"""Triton kernels of SASA windowed attention on CUDA cores (used by :mod:`.triton_launch`, imported on first use).

Layout in memory. ``q, k, v`` and their gradients are token-major: the ``d`` channels of head ``g`` at pixel
``t`` of image ``n`` sit at ``ptr + (n·H·W + t)·s_t + g·d + e`` (``s_t`` the token stride: ``3C`` for the
fused q/k/v projection, whose three parts are given as three base pointers). ``out`` and ``grad_out``
use token stride ``o_t`` (``C``). ``lse`` and ``delta`` are ``(N·heads, H, W)`` float32/64.

Layout in registers. Tiles are 4-D: a pixel axis (1), a 16-byte vector axis (3) and, on axes 0 and 2,
the ``NCH`` chunks a thread holds and the ``SPLIT`` threads a pixel's head is spread over (1 for head
widths up to 16; more for wider heads, so a thread holds at most 16 channels). Per-pixel values are
``[1, BLOCK, 1, 1]``; per-window-offset values put the ``KP`` offsets on the chunk axis. With every tensor
in this one family Triton gives each thread its pixel's chunks and all offsets of a window row, loads
16-byte vectors, and needs no layout conversion or barrier inside the loops: dot products over channels
are in-thread sums (plus ``log2(SPLIT)`` shuffles). Which of axes 0 and 2 holds the chunks
(``CHUNK_AXIS``) follows how the installed Triton orders equally contiguous axes when it assigns
threads (see :func:`.triton_configs.chunk_axis`): the chunk axis must be the one it fills last.

Logits are in log2 units (queries are multiplied by log2(e) once, so ``exp2`` gives the exact softmax);
the layer's query scale, if any, is already in the projection. The relative term
``q·r_row[a] + q·r_col[c]`` (Eq. 3 with Sec. 2.2's split of the channels) is computed as ``2k`` dot
products per query: the ``k`` column logits once before the loop, one row logit per window row. The
window loop over rows is rolled; within a row the forward unrolls the ``k`` columns (so per-column values
are registers) and rescales the softmax once per row, not per key.

Backward recomputes the logits (``p = exp2(s - lse)``): one kernel per query tile computes
``delta = sum(grad_out·out)`` (stored for the key kernel), ``grad_q`` and this tile's share of the
relative-table gradients (one small ``tl.dot`` over the tile); one kernel per key tile gathers
``grad_k, grad_v`` from the ``k²`` queries whose window holds the key (no atomics).
"""

import triton
import triton.language as tl


@triton.jit
def _dot(a, b):
    """Per-pixel dot product over the channel axes: ``[.., BLOCK, .., VEC]·[..] -> [1, BLOCK, 1, 1]``."""
    return tl.sum(tl.sum(tl.sum(a * b, 3, keep_dims=True), 2, keep_dims=True), 0, keep_dims=True)


@triton.jit
def _log2e(ACC: tl.constexpr):
    """log2(e) in the accumulation dtype (a float literal would be rounded to float32)."""
    return tl.full([1, 1, 1, 1], 1.4426950408889634, ACC)


@triton.jit
def _pick(t, kidx, c, CHUNK_AXIS: tl.constexpr):
    """Entry ``c`` of a per-offset tensor, ``[1, BLOCK, 1, 1]`` (a register when ``c`` is a constant)."""
    return tl.sum(tl.where(kidx == c, t, 0.0), CHUNK_AXIS, keep_dims=True)


@triton.jit
def _offset_index(KP: tl.constexpr, CHUNK_AXIS: tl.constexpr):
    """Window offsets ``0..KP-1`` along the chunk axis."""
    if CHUNK_AXIS == 0:
        return tl.arange(0, KP)[:, None, None, None]
    else:
        return tl.arange(0, KP)[None, None, :, None]


@triton.jit
def _tile(height, width, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """This program's plane ``b``, pixel rows/columns ``[1, BLOCK, 1, 1]``, in-image flag and token index."""
    tiles = tl.cdiv(height, BLOCK_H) * tl.cdiv(width, BLOCK_W)
    pid = tl.program_id(0)
    b = pid // tiles
    tile = pid % tiles
    tiles_w = tl.cdiv(width, BLOCK_W)
    offs = tl.arange(0, BLOCK_H * BLOCK_W)[None, :, None, None]
    y = (tile // tiles_w) * BLOCK_H + offs // BLOCK_W
    x = (tile % tiles_w) * BLOCK_W + offs % BLOCK_W
    valid = (y < height) & (x < width)
    return b, y, x, valid, y * width + x


@triton.jit
def _channels(HD: tl.constexpr, NCH: tl.constexpr, SPLIT: tl.constexpr, VEC: tl.constexpr, CHUNK_AXIS: tl.constexpr):
    """Channel index (``(chunk·SPLIT + thread)·VEC + element``) and its in-head mask."""
    if CHUNK_AXIS == 0:
        ch = tl.arange(0, NCH)[:, None, None, None] * SPLIT + tl.arange(0, SPLIT)[None, None, :, None]
    else:
        ch = tl.arange(0, NCH)[None, None, :, None] * SPLIT + tl.arange(0, SPLIT)[:, None, None, None]
    ch = ch * VEC + tl.arange(0, VEC)[None, None, None, :]
    return ch, ch < HD


@triton.jit
def _zeros_per_offset(kidx, pixels, ACC: tl.constexpr):
    """Zeros with one entry per window offset and pixel."""
    return (kidx + pixels * 0).to(ACC) * 0


@triton.jit
def _column_logits(qv, rel_col, ch, ch_ok, kidx, pixels, KS: tl.constexpr, HD: tl.constexpr, ACC: tl.constexpr):
    """``q_col · r_col[c]`` for every window column ``c`` (0 beyond ``KS``), one entry per offset and pixel."""
    HALF: tl.constexpr = HD // 2
    rc = _zeros_per_offset(kidx, pixels, ACC)
    for c in tl.static_range(KS):
        table = tl.load(rel_col + c * HALF + ch - HALF, mask=(ch >= HALF) & ch_ok, other=0.0).to(ACC)
        rc = tl.where(kidx == c, _dot(qv, table), rc)
    return rc


@triton.jit
def _offsets_by_pixels(t, KP: tl.constexpr, BLOCK: tl.constexpr, CHUNK_AXIS: tl.constexpr):
    """A per-offset tensor as a ``(KP, BLOCK)`` matrix."""
    if CHUNK_AXIS == 0:
        return tl.reshape(t, (KP, BLOCK))
    else:
        return tl.trans(tl.reshape(t, (BLOCK, KP)))


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def forward_kernel(q_ptr, k_ptr, v_ptr, s_t, rel_row, rel_col, out_ptr, o_t, lse_ptr, height, width, heads,
                   KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, NCH: tl.constexpr, SPLIT: tl.constexpr,
                   VEC: tl.constexpr, CHUNK_AXIS: tl.constexpr, MASK_PADDING: tl.constexpr,
                   BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    # fmt: on
    """``out = softmax(logits) v`` over each query's window and ``lse = log2 sum exp2(logits)``."""
    R: tl.constexpr = KS // 2
    HALF: tl.constexpr = HD // 2
    b, y, x, valid, tok = _tile(height, width, BLOCK_H, BLOCK_W)
    ch, ch_ok = _channels(HD, NCH, SPLIT, VEC, CHUNK_AXIS)
    kidx = _offset_index(KP, CHUNK_AXIS)
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    q_ptr += base
    k_ptr += base
    v_ptr += base
    qv = tl.load(q_ptr + tok * s_t + ch, mask=valid & ch_ok, other=0.0).to(ACC) * _log2e(ACC)
    rc = _column_logits(qv, rel_col, ch, ch_ok, kidx, tok, KS, HD, ACC)
    m = tl.full([1, BLOCK_H * BLOCK_W, 1, 1], -1.0e30, ACC)
    denom = tl.zeros([1, BLOCK_H * BLOCK_W, 1, 1], ACC)
    acc = tl.zeros(qv.shape, ACC)
    for a in range(KS):
        ky = y + (a - R)
        row_in = valid & (ky >= 0) & (ky < height)
        row_tok = ky * width + x
        rrow = tl.load(rel_row + a * HALF + ch, mask=ch < HALF, other=0.0).to(ACC)
        s_row = rc + _dot(qv, rrow)  # the relative logits of this window row, one per column
        for c in tl.static_range(KS):
            inside = row_in & (x + (c - R) >= 0) & (x + (c - R) < width)
            kt = tl.load(k_ptr + (row_tok + (c - R)) * s_t + ch, mask=inside & ch_ok, other=0.0).to(ACC)
            s = _dot(qv, kt)
            if MASK_PADDING:
                s = tl.where(inside, s, float("-inf"))
            s_row = tl.where(kidx == c, s_row + s, s_row)
        if KP > KS:
            s_row = tl.where(kidx < KS, s_row, float("-inf"))
        m_new = tl.maximum(m, tl.max(s_row, CHUNK_AXIS, keep_dims=True))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s_row - m_new)
        denom = denom * alpha + tl.sum(p, CHUNK_AXIS, keep_dims=True)
        acc = acc * alpha
        for c in tl.static_range(KS):
            inside = row_in & (x + (c - R) >= 0) & (x + (c - R) < width)
            vt = tl.load(v_ptr + (row_tok + (c - R)) * s_t + ch, mask=inside & ch_ok, other=0.0).to(ACC)
            acc += _pick(p, kidx, c, CHUNK_AXIS) * vt
        m = m_new
    denom = tl.where(denom > 0, denom, 1.0)  # tile padding only: never stored
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    tl.store(out_ptr + out_base + tok * o_t + ch, (acc / denom).to(out_ptr.dtype.element_ty), mask=valid & ch_ok)
    tl.store(lse_ptr + b.to(tl.int64) * plane + tok, m + tl.log2(denom), mask=valid)


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def backward_query_kernel(q_ptr, k_ptr, v_ptr, s_t, rel_row, rel_col, out_ptr, grad_out_ptr, o_t, lse_ptr,
                          delta_ptr, grad_q_ptr, grad_rel_ptr, height, width, heads,
                          KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, NCH: tl.constexpr,
                          SPLIT: tl.constexpr, VEC: tl.constexpr, CHUNK_AXIS: tl.constexpr,
                          MASK_PADDING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                          ACC: tl.constexpr):
    # fmt: on
    """``delta``, ``grad_q`` (token stride ``s_t``) and this tile's ``(2·KP, padded d)`` share of the table gradients.

    ``grad_rel`` rows ``0..KP-1`` hold ``sum_i dS_row[i, a] q_i`` (row table, channels ``< d/2``), rows
    ``KP..2KP-1`` hold ``sum_i dS_col[i, c] q_i`` (column table, channels ``>= d/2``).
    """
    R: tl.constexpr = KS // 2
    HALF: tl.constexpr = HD // 2
    BLOCK: tl.constexpr = BLOCK_H * BLOCK_W
    D: tl.constexpr = NCH * SPLIT * VEC
    b, y, x, valid, tok = _tile(height, width, BLOCK_H, BLOCK_W)
    ch, ch_ok = _channels(HD, NCH, SPLIT, VEC, CHUNK_AXIS)
    kidx = _offset_index(KP, CHUNK_AXIS)
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    here = valid & ch_ok
    qv = tl.load(q_ptr + base + tok * s_t + ch, mask=here, other=0.0).to(ACC) * _log2e(ACC)
    gv = tl.load(grad_out_ptr + out_base + tok * o_t + ch, mask=here, other=0.0).to(ACC)
    ov = tl.load(out_ptr + out_base + tok * o_t + ch, mask=here, other=0.0).to(ACC)
    delta = _dot(gv, ov)  # sum_t p_t dp_t
    tl.store(delta_ptr + b.to(tl.int64) * plane + tok, delta, mask=valid)
    lse = tl.load(lse_ptr + b.to(tl.int64) * plane + tok, mask=valid, other=0.0)
    rc = _column_logits(qv, rel_col, ch, ch_ok, kidx, tok, KS, HD, ACC)
    grad_q = tl.zeros(qv.shape, ACC)
    ds_col = _zeros_per_offset(kidx, tok, ACC)  # sum over window rows of dS, per window column
    ds_rows = _zeros_per_offset(kidx, tok, ACC)  # sum over window columns of dS, per window row
    for a in range(KS):
        ky = y + (a - R)
        row_in = valid & (ky >= 0) & (ky < height)
        row_tok = ky * width + x
        rrow = tl.load(rel_row + a * HALF + ch, mask=ch < HALF, other=0.0).to(ACC)
        r_row = _dot(qv, rrow)
        ds_row = tl.zeros([1, BLOCK, 1, 1], ACC)
        for c in range(KS):  # rolled: unrolled, the k and v loads of all columns would be in flight at once
            inside = row_in & (x + (c - R) >= 0) & (x + (c - R) < width)
            where = base + (row_tok + (c - R)) * s_t + ch
            kt = tl.load(k_ptr + where, mask=inside & ch_ok, other=0.0).to(ACC)
            vt = tl.load(v_ptr + where, mask=inside & ch_ok, other=0.0).to(ACC)
            p = tl.exp2(_dot(qv, kt) + r_row + _pick(rc, kidx, c, CHUNK_AXIS) - lse)
            if MASK_PADDING:
                p = tl.where(inside, p, 0.0)
            ds = tl.where(valid, p * (_dot(gv, vt) - delta), 0.0)
            grad_q += ds * kt
            ds_row += ds
            ds_col = tl.where(kidx == c, ds_col + ds, ds_col)
        grad_q += ds_row * rrow
        ds_rows = tl.where(kidx == a, ds_row, ds_rows)
    for c in tl.static_range(KS):
        rcol = tl.load(rel_col + c * HALF + ch - HALF, mask=(ch >= HALF) & ch_ok, other=0.0).to(ACC)
        grad_q += _pick(ds_col, kidx, c, CHUNK_AXIS) * rcol
    tl.store(grad_q_ptr + base + tok * s_t + ch, grad_q.to(grad_q_ptr.dtype.element_ty), mask=here)
    # table gradients of this tile: [dS_row | dS_col]^T (2KP, BLOCK) @ q (BLOCK, D)
    qs = tl.reshape(tl.permute(qv / _log2e(ACC), (1, CHUNK_AXIS, 2 - CHUNK_AXIS, 3)), (BLOCK, D))
    weights = tl.join(_offsets_by_pixels(ds_rows, KP, BLOCK, CHUNK_AXIS), _offsets_by_pixels(ds_col, KP, BLOCK, CHUNK_AXIS))
    weights = tl.reshape(tl.permute(weights, (2, 0, 1)), (2 * KP, BLOCK))  # [table · KP + offset, pixel]
    rows = tl.arange(0, 2 * KP)[:, None]
    if D < 16:  # older Triton needs 16 columns in tl.dot: pair every channel with a zero column
        qs = tl.reshape(tl.join(qs, tl.zeros_like(qs)), (BLOCK, 2 * D))
        grad_rel = tl.dot(weights, qs, input_precision="ieee", out_dtype=ACC)
        cols = tl.arange(0, 2 * D)[None, :]
        where = rows * D + cols // 2
        keep = (cols % 2 == 0) & (rows >= 0)
    else:
        grad_rel = tl.dot(weights, qs, input_precision="ieee", out_dtype=ACC)
        cols = tl.arange(0, D)[None, :]
        where = rows * D + cols
        keep = (cols >= 0) & (rows >= 0)
    tl.store(grad_rel_ptr + tl.program_id(0).to(tl.int64) * (2 * KP * D) + where, grad_rel, mask=keep)


# fmt: off
@triton.jit(do_not_specialize=["height", "width"])
def backward_key_kernel(q_ptr, k_ptr, v_ptr, s_t, rel_row, rel_col, grad_out_ptr, o_t, lse_ptr, delta_ptr,
                        grad_k_ptr, grad_v_ptr, height, width, heads,
                        KS: tl.constexpr, KP: tl.constexpr, HD: tl.constexpr, NCH: tl.constexpr,
                        SPLIT: tl.constexpr, VEC: tl.constexpr, CHUNK_AXIS: tl.constexpr,
                        MASK_PADDING: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
                        ACC: tl.constexpr):
    # fmt: on
    """``grad_k``, ``grad_v`` (token stride ``s_t``): each key gathers from the ``k²`` queries that see it."""
    R: tl.constexpr = KS // 2
    HALF: tl.constexpr = HD // 2
    b, y, x, valid, tok = _tile(height, width, BLOCK_H, BLOCK_W)  # y, x: key positions
    ch, ch_ok = _channels(HD, NCH, SPLIT, VEC, CHUNK_AXIS)
    plane = height * width
    base = (b // heads).to(tl.int64) * plane * s_t + (b % heads) * HD
    out_base = (b // heads).to(tl.int64) * plane * o_t + (b % heads) * HD
    stats_base = b.to(tl.int64) * plane
    here = valid & ch_ok
    kt = tl.load(k_ptr + base + tok * s_t + ch, mask=here, other=0.0).to(ACC)
    vt = tl.load(v_ptr + base + tok * s_t + ch, mask=here, other=0.0).to(ACC)
    grad_k = tl.zeros(kt.shape, ACC)
    grad_v = tl.zeros(kt.shape, ACC)
    for offset in range(KS * KS):
        a = offset // KS
        c = offset % KS
        qy = y - (a - R)  # the query that sees this key at window offset (a, c)
        qx = x - (c - R)
        seen = valid & (qy >= 0) & (qy < height) & (qx >= 0) & (qx < width)
        qtok = qy * width + qx
        qv = tl.load(q_ptr + base + qtok * s_t + ch, mask=seen & ch_ok, other=0.0).to(ACC) * _log2e(ACC)
        gv = tl.load(grad_out_ptr + out_base + qtok * o_t + ch, mask=seen & ch_ok, other=0.0).to(ACC)
        lse = tl.load(lse_ptr + stats_base + qtok, mask=seen, other=0.0)
        delta = tl.load(delta_ptr + stats_base + qtok, mask=seen, other=0.0)
        emb = tl.load(rel_row + a * HALF + ch, mask=ch < HALF, other=0.0).to(ACC)
        emb += tl.load(rel_col + c * HALF + ch - HALF, mask=(ch >= HALF) & ch_ok, other=0.0).to(ACC)
        p = tl.where(seen, tl.exp2(_dot(qv, kt + emb) - lse), 0.0)
        ds = p * (_dot(gv, vt) - delta)
        grad_k += ds * qv
        grad_v += p * gv
    grad_k = grad_k / _log2e(ACC)  # qv carries log2(e)
    tl.store(grad_k_ptr + base + tok * s_t + ch, grad_k.to(grad_k_ptr.dtype.element_ty), mask=here)
    tl.store(grad_v_ptr + base + tok * s_t + ch, grad_v.to(grad_v_ptr.dtype.element_ty), mask=here)


@triton.jit
def layout_probe_kernel(ptr, stride, A: tl.constexpr, B: tl.constexpr, VEC: tl.constexpr):
    """A load of an ``[A, B, VEC]`` tile whose axes 0 and 1 are equally (not) contiguous; compiled, never run,
    to see which of them the installed Triton gives threads first (:func:`.triton_configs.chunk_axis`)."""
    offsets = tl.arange(0, A)[:, None, None] * VEC + tl.arange(0, B)[None, :, None] * stride
    offsets += tl.arange(0, VEC)[None, None, :]
    tl.store(ptr + offsets, tl.load(ptr + offsets) * 2)
