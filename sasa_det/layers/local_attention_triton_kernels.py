"""Triton kernels of SASA windowed attention (used by :mod:`.local_attention_triton`, imported on first use).

Tensors: ``q, k, v, grad_out, out, grad_*`` are ``(B, d, H, W)`` contiguous (``B`` = batch·heads);
``rel_row, rel_col`` are ``(k, d/2)``; ``lse`` and ``delta`` are ``(B, H, W)``; ``grad_rel`` is
``(B·tiles, k, k, D)``. ``D`` is the head width padded to a power of two (extra channels masked).
Each program handles one ``BLOCK_H × BLOCK_W`` tile of queries (or keys) of one batch·head plane.
"""

import triton
import triton.language as tl


@triton.jit
def offset_embedding(rel_row, rel_col, a, c, ch, half, d, ACC: tl.constexpr):
    """``[rel_row[a], rel_col[c]]`` as one vector over the (padded) head channels."""
    row = tl.load(rel_row + a * half + ch, mask=ch < half, other=0.0)
    col = tl.load(rel_col + c * half + ch - half, mask=(ch >= half) & (ch < d), other=0.0)
    return (row + col).to(ACC)


@triton.jit
def tile_positions(height, width, d, D: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr):
    """Row, column and in-image flag of this program's pixels; channel indices, their mask; plane offset."""
    tile = tl.program_id(1)
    tiles_w = tl.cdiv(width, BLOCK_W)
    offs = tl.arange(0, BLOCK_H * BLOCK_W)
    y = (tile // tiles_w) * BLOCK_H + offs // BLOCK_W
    x = (tile % tiles_w) * BLOCK_W + offs % BLOCK_W
    valid = (y < height) & (x < width)
    ch = tl.arange(0, D)
    base = tl.program_id(0).to(tl.int64) * d * height * width
    return y, x, valid, ch, ch < d, base


@triton.jit
def neighbour(y, x, dy, dx, valid, height, width, base, ch, ch_ok):
    """The pixels at ``(y + dy, x + dx)``: in-image flag, element offsets ``(pixels, D)`` and load mask."""
    ny = y + dy
    nx = x + dx
    inside = valid & (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
    where = base + ch[None, :] * height * width + (ny * width + nx)[:, None]
    return inside, where, inside[:, None] & ch_ok[None, :]


@triton.jit
def forward_kernel(q_ptr, k_ptr, v_ptr, rel_row, rel_col, out_ptr, lse_ptr, height, width, half, d,
                   KS: tl.constexpr, MASK_PADDING: tl.constexpr, D: tl.constexpr, BLOCK_H: tl.constexpr,
                   BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    bh = tl.program_id(0)
    y, x, valid, ch, ch_ok, base = tile_positions(height, width, d, D, BLOCK_H, BLOCK_W)
    plane = height * width
    _, here, here_mask = neighbour(y, x, 0, 0, valid, height, width, base, ch, ch_ok)
    qv = tl.load(q_ptr + here, mask=here_mask, other=0.0).to(ACC)
    running_max = tl.full([BLOCK_H * BLOCK_W], -1e30, ACC)
    running_sum = tl.zeros([BLOCK_H * BLOCK_W], ACC)
    acc = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    for a in tl.static_range(KS):
        for c in tl.static_range(KS):
            inside, where, load_mask = neighbour(y, x, a - KS // 2, c - KS // 2, valid, height, width, base, ch, ch_ok)
            kv = tl.load(k_ptr + where, mask=load_mask, other=0.0).to(ACC)
            emb = offset_embedding(rel_row, rel_col, a, c, ch, half, d, ACC)
            logit = tl.sum(qv * (kv + emb[None, :]), axis=1)
            if MASK_PADDING:
                logit = tl.where(inside, logit, float("-inf"))
            new_max = tl.maximum(running_max, logit)
            scale = tl.exp(running_max - new_max)
            p = tl.exp(logit - new_max)
            vv = tl.load(v_ptr + where, mask=load_mask, other=0.0).to(ACC)
            acc = acc * scale[:, None] + p[:, None] * vv
            running_sum = running_sum * scale + p
            running_max = new_max
    running_sum = tl.where(running_sum > 0, running_sum, 1.0)  # tile padding only: never stored
    out = acc / running_sum[:, None]
    tl.store(out_ptr + here, out.to(out_ptr.dtype.element_ty), mask=here_mask)
    tl.store(lse_ptr + bh.to(tl.int64) * plane + y * width + x, running_max + tl.log(running_sum), mask=valid)


@triton.jit
def backward_query_kernel(q_ptr, k_ptr, v_ptr, rel_row, rel_col, grad_out_ptr, lse_ptr, delta_ptr,
                          grad_q_ptr, grad_rel_ptr, height, width, half, d,
                          KS: tl.constexpr, MASK_PADDING: tl.constexpr, D: tl.constexpr,
                          BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    bh = tl.program_id(0)
    y, x, valid, ch, ch_ok, base = tile_positions(height, width, d, D, BLOCK_H, BLOCK_W)
    plane = height * width
    _, here, here_mask = neighbour(y, x, 0, 0, valid, height, width, base, ch, ch_ok)
    qv = tl.load(q_ptr + here, mask=here_mask, other=0.0).to(ACC)
    gv = tl.load(grad_out_ptr + here, mask=here_mask, other=0.0).to(ACC)
    lse = tl.load(lse_ptr + bh.to(tl.int64) * plane + y * width + x, mask=valid, other=0.0)
    delta = tl.load(delta_ptr + bh.to(tl.int64) * plane + y * width + x, mask=valid, other=0.0)
    grad_q = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    program = bh * tl.num_programs(1) + tl.program_id(1)
    for a in tl.static_range(KS):
        for c in tl.static_range(KS):
            inside, where, load_mask = neighbour(y, x, a - KS // 2, c - KS // 2, valid, height, width, base, ch, ch_ok)
            kv = tl.load(k_ptr + where, mask=load_mask, other=0.0).to(ACC)
            vv = tl.load(v_ptr + where, mask=load_mask, other=0.0).to(ACC)
            key = kv + offset_embedding(rel_row, rel_col, a, c, ch, half, d, ACC)[None, :]
            logit = tl.sum(qv * key, axis=1)
            p = tl.exp(logit - lse)
            if MASK_PADDING:
                p = tl.where(inside, p, 0.0)
            ds = tl.where(valid, p * (tl.sum(gv * vv, axis=1) - delta), 0.0)
            grad_q += ds[:, None] * key
            # this tile's share of d(loss)/d[rel_row[a], rel_col[c]], summed over tiles by the caller
            tl.store(grad_rel_ptr + ((program * KS + a) * KS + c) * D + ch, tl.sum(ds[:, None] * qv, axis=0))
    tl.store(grad_q_ptr + here, grad_q.to(grad_q_ptr.dtype.element_ty), mask=here_mask)


@triton.jit
def backward_key_kernel(q_ptr, k_ptr, v_ptr, rel_row, rel_col, grad_out_ptr, lse_ptr, delta_ptr,
                        grad_k_ptr, grad_v_ptr, height, width, half, d,
                        KS: tl.constexpr, MASK_PADDING: tl.constexpr, D: tl.constexpr,
                        BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr, ACC: tl.constexpr):
    bh = tl.program_id(0)
    y, x, valid, ch, ch_ok, base = tile_positions(height, width, d, D, BLOCK_H, BLOCK_W)
    # y, x: key positions
    plane = height * width
    _, here, here_mask = neighbour(y, x, 0, 0, valid, height, width, base, ch, ch_ok)
    kv = tl.load(k_ptr + here, mask=here_mask, other=0.0).to(ACC)
    vv = tl.load(v_ptr + here, mask=here_mask, other=0.0).to(ACC)
    grad_k = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    grad_v = tl.zeros([BLOCK_H * BLOCK_W, D], ACC)
    for a in tl.static_range(KS):
        for c in tl.static_range(KS):
            # the query that sees this key at offset (a, c)
            seen, where, load_mask = neighbour(y, x, KS // 2 - a, KS // 2 - c, valid, height, width, base, ch, ch_ok)
            qy = y + (KS // 2 - a)
            qx = x + (KS // 2 - c)
            qv = tl.load(q_ptr + where, mask=load_mask, other=0.0).to(ACC)
            gv = tl.load(grad_out_ptr + where, mask=load_mask, other=0.0).to(ACC)
            stats = bh.to(tl.int64) * plane + qy * width + qx
            lse = tl.load(lse_ptr + stats, mask=seen, other=0.0)
            delta = tl.load(delta_ptr + stats, mask=seen, other=0.0)
            emb = offset_embedding(rel_row, rel_col, a, c, ch, half, d, ACC)
            p = tl.where(seen, tl.exp(tl.sum(qv * (kv + emb[None, :]), axis=1) - lse), 0.0)
            ds = p * (tl.sum(gv * vv, axis=1) - delta)
            grad_k += ds[:, None] * qv
            grad_v += p[:, None] * gv
    tl.store(grad_k_ptr + here, grad_k.to(grad_k_ptr.dtype.element_ty), mask=here_mask)
    tl.store(grad_v_ptr + here, grad_v.to(grad_v_ptr.dtype.element_ty), mask=here_mask)
