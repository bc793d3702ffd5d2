// SASA windowed attention on CPU: one fused loop per pass (forward; backward by queries; backward by keys).
//
// Layout (the layer's own): q, k, v, grad_out, out are (B, d, H, W) contiguous with B = batch * heads;
// rel_row, rel_col are (k, d/2); attn and grad_logits are (B, k*k, H, W), offset t = a * k + c for the
// key at (y + a - k/2, x + c - k/2). Keys outside the image are zero vectors that take part in the
// softmax (mask_padding = false) or are excluded from it (mask_padding = true).
//
// Every pass is one at::parallel_for over the B*H rows (torch's intra-op threads when built with -fopenmp). A task handles one row of W queries (or keys):
// for each window offset the W logits, weights or gradients are contiguous loops over x against the
// shifted row of K/V (or Q), so the compiler vectorises them, and the row's k*k*W working set stays in
// cache. Excluded keys are skipped by range, so no infinities enter the arithmetic.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

struct Geometry {
  int64_t B, d, H, W, ks;
  int64_t r() const { return ks / 2; }
  int64_t kk() const { return ks * ks; }
  int64_t plane() const { return H * W; }
  // x range [lo, hi) whose key column x + c - r lies inside the image; 0 <= lo <= hi <= W, also when W <= r.
  int64_t lo(int64_t c) const { return std::clamp<int64_t>(r() - c, 0, W); }
  int64_t hi(int64_t c) const { return std::clamp<int64_t>(W + r() - c, lo(c), W); }
};

template <typename scalar_t>
void forward_rows(const scalar_t* q, const scalar_t* k, const scalar_t* v, const scalar_t* rel_row,
                  const scalar_t* rel_col, scalar_t* out, scalar_t* attn, Geometry g, bool mask_padding) {
  const int64_t W = g.W, H = g.H, d = g.d, half = d / 2, ks = g.ks, r = g.r(), kk = g.kk(), P = g.plane();
  at::parallel_for(0, g.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> rel(2 * ks * W), largest(W), total(W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const scalar_t* qb = q + b * d * P + y * W;  // channel e of this query row: qb + e * P
      const scalar_t* kb = k + b * d * P;
      const scalar_t* vb = v + b * d * P;
      scalar_t* ab = attn + b * kk * P + y * W;  // offset t of this row: ab + t * P
      // relative logits: rel[a] = q[:half] . rel_row[a], rel[ks + c] = q[half:] . rel_col[c]
      std::fill(rel.begin(), rel.end(), scalar_t(0));
      for (int64_t a = 0; a < ks; ++a) {
        scalar_t* rr = rel.data() + a * W;
        scalar_t* rc = rel.data() + (ks + a) * W;
        for (int64_t e = 0; e < half; ++e) {
          const scalar_t wr = rel_row[a * half + e], wc = rel_col[a * half + e];
          const scalar_t* q1 = qb + e * P;
          const scalar_t* q2 = qb + (half + e) * P;
          for (int64_t x = 0; x < W; ++x) {
            rr[x] += wr * q1[x];
            rc[x] += wc * q2[x];
          }
        }
      }
      // logits into attn, and their running maximum over included keys (the centre key always is)
      for (int64_t a = 0; a < ks; ++a) {
        const int64_t yy = y + a - r;
        const bool row_inside = yy >= 0 && yy < H;
        for (int64_t c = 0; c < ks; ++c) {
          scalar_t* logit = ab + (a * ks + c) * P;
          const scalar_t* rr = rel.data() + a * W;
          const scalar_t* rc = rel.data() + (ks + c) * W;
          for (int64_t x = 0; x < W; ++x) logit[x] = rr[x] + rc[x];
          if (!row_inside) continue;
          const int64_t lo = g.lo(c), hi = g.hi(c);
          for (int64_t e = 0; e < d; ++e) {
            const scalar_t* qe = qb + e * P;
            const scalar_t* ke = kb + e * P + yy * W + (c - r);
            for (int64_t x = lo; x < hi; ++x) logit[x] += qe[x] * ke[x];
          }
        }
      }
      std::copy(ab + (r * ks + r) * P, ab + (r * ks + r) * P + W, largest.begin());
      for (int64_t a = 0; a < ks; ++a) {
        const int64_t yy = y + a - r;
        const bool row_inside = yy >= 0 && yy < H;
        if (mask_padding && !row_inside) continue;
        for (int64_t c = 0; c < ks; ++c) {
          const scalar_t* logit = ab + (a * ks + c) * P;
          const int64_t lo = mask_padding ? g.lo(c) : 0, hi = mask_padding ? g.hi(c) : W;
          for (int64_t x = lo; x < hi; ++x) largest[x] = std::max(largest[x], logit[x]);
        }
      }
      // softmax: excluded keys get weight 0
      std::fill(total.begin(), total.end(), scalar_t(0));
      for (int64_t a = 0; a < ks; ++a) {
        const int64_t yy = y + a - r;
        const bool row_inside = yy >= 0 && yy < H;
        for (int64_t c = 0; c < ks; ++c) {
          scalar_t* logit = ab + (a * ks + c) * P;
          if (mask_padding && !row_inside) {
            std::fill(logit, logit + W, scalar_t(0));
            continue;
          }
          const int64_t lo = mask_padding ? g.lo(c) : 0, hi = mask_padding ? g.hi(c) : W;
          std::fill(logit, logit + lo, scalar_t(0));
          std::fill(logit + hi, logit + W, scalar_t(0));
          for (int64_t x = lo; x < hi; ++x) {
            logit[x] = std::exp(logit[x] - largest[x]);
            total[x] += logit[x];
          }
        }
      }
      for (int64_t x = 0; x < W; ++x) total[x] = scalar_t(1) / total[x];
      for (int64_t t = 0; t < kk; ++t) {
        scalar_t* p = ab + t * P;
        for (int64_t x = 0; x < W; ++x) p[x] *= total[x];
      }
      // weighted sum of the values (zero values outside the image add nothing)
      for (int64_t e = 0; e < d; ++e) {
        scalar_t* oe = out + (b * d + e) * P + y * W;
        std::fill(oe, oe + W, scalar_t(0));
        for (int64_t a = 0; a < ks; ++a) {
          const int64_t yy = y + a - r;
          if (yy < 0 || yy >= H) continue;
          for (int64_t c = 0; c < ks; ++c) {
            const scalar_t* p = ab + (a * ks + c) * P;
            const scalar_t* ve = vb + e * P + yy * W + (c - r);
            for (int64_t x = g.lo(c), hi = g.hi(c); x < hi; ++x) oe[x] += p[x] * ve[x];
          }
        }
      }
    }
  });
}

// Per query row: grad_logits (softmax backward, into its buffer) and grad_q (content and relative parts).
template <typename scalar_t>
void backward_queries(const scalar_t* grad_out, const scalar_t* k, const scalar_t* v, const scalar_t* rel_row,
                      const scalar_t* rel_col, const scalar_t* attn, scalar_t* grad_logits, scalar_t* grad_q,
                      Geometry g) {
  const int64_t W = g.W, H = g.H, d = g.d, half = d / 2, ks = g.ks, r = g.r(), kk = g.kk(), P = g.plane();
  at::parallel_for(0, g.B * H, 1, [&](int64_t begin, int64_t end) {
    std::vector<scalar_t> weighted(W), sums(2 * ks * W);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, y = row % H;
      const scalar_t* gb = grad_out + b * d * P + y * W;
      const scalar_t* ab = attn + b * kk * P + y * W;
      scalar_t* lb = grad_logits + b * kk * P + y * W;
      // grad of the weights: grad_out . v_key (0 for keys outside the image)
      for (int64_t a = 0; a < ks; ++a) {
        const int64_t yy = y + a - r;
        for (int64_t c = 0; c < ks; ++c) {
          scalar_t* l = lb + (a * ks + c) * P;
          std::fill(l, l + W, scalar_t(0));
          if (yy < 0 || yy >= H) continue;
          for (int64_t e = 0; e < d; ++e) {
            const scalar_t* ge = gb + e * P;
            const scalar_t* ve = v + (b * d + e) * P + yy * W + (c - r);
            for (int64_t x = g.lo(c), hi = g.hi(c); x < hi; ++x) l[x] += ge[x] * ve[x];
          }
        }
      }
      // softmax backward: grad_logit = p * (grad_p - sum p * grad_p); excluded keys have p = 0
      std::fill(weighted.begin(), weighted.end(), scalar_t(0));
      for (int64_t t = 0; t < kk; ++t) {
        const scalar_t* p = ab + t * P;
        const scalar_t* l = lb + t * P;
        for (int64_t x = 0; x < W; ++x) weighted[x] += p[x] * l[x];
      }
      std::fill(sums.begin(), sums.end(), scalar_t(0));
      for (int64_t a = 0; a < ks; ++a) {
        for (int64_t c = 0; c < ks; ++c) {
          const scalar_t* p = ab + (a * ks + c) * P;
          scalar_t* l = lb + (a * ks + c) * P;
          scalar_t* row_sum = sums.data() + a * W;
          scalar_t* col_sum = sums.data() + (ks + c) * W;
          for (int64_t x = 0; x < W; ++x) {
            l[x] = p[x] * (l[x] - weighted[x]);
            row_sum[x] += l[x];
            col_sum[x] += l[x];
          }
        }
      }
      // grad_q: content part (keys) and relative part (row sums meet rel_row, column sums rel_col)
      for (int64_t e = 0; e < d; ++e) {
        scalar_t* qg = grad_q + (b * d + e) * P + y * W;
        std::fill(qg, qg + W, scalar_t(0));
        for (int64_t a = 0; a < ks; ++a) {
          const int64_t yy = y + a - r;
          const scalar_t weight = e < half ? rel_row[a * half + e] : rel_col[a * half + e - half];
          const scalar_t* s = sums.data() + (e < half ? a : ks + a) * W;
          for (int64_t x = 0; x < W; ++x) qg[x] += weight * s[x];
          if (yy < 0 || yy >= H) continue;
          for (int64_t c = 0; c < ks; ++c) {
            const scalar_t* l = lb + (a * ks + c) * P;
            const scalar_t* ke = k + (b * d + e) * P + yy * W + (c - r);
            for (int64_t x = g.lo(c), hi = g.hi(c); x < hi; ++x) qg[x] += l[x] * ke[x];
          }
        }
      }
    }
  });
}

// Per key row: grad_k and grad_v of in-image keys, gathered from the k*k queries whose window holds them.
template <typename scalar_t>
void backward_keys(const scalar_t* grad_out, const scalar_t* q, const scalar_t* attn, const scalar_t* grad_logits,
                   scalar_t* grad_k, scalar_t* grad_v, Geometry g) {
  const int64_t W = g.W, H = g.H, d = g.d, ks = g.ks, r = g.r(), kk = g.kk(), P = g.plane();
  at::parallel_for(0, g.B * H, 1, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, yy = row % H;
      for (int64_t e = 0; e < d; ++e) {
        scalar_t* kg = grad_k + (b * d + e) * P + yy * W;
        scalar_t* vg = grad_v + (b * d + e) * P + yy * W;
        std::fill(kg, kg + W, scalar_t(0));
        std::fill(vg, vg + W, scalar_t(0));
        for (int64_t a = 0; a < ks; ++a) {
          const int64_t y = yy - (a - r);  // the query row that sees this key row at row offset a
          if (y < 0 || y >= H) continue;
          const scalar_t* qe = q + (b * d + e) * P + y * W;
          const scalar_t* ge = grad_out + (b * d + e) * P + y * W;
          for (int64_t c = 0; c < ks; ++c) {
            const int64_t shift = r - c;  // query column x = key column + shift
            const scalar_t* l = grad_logits + (b * kk + a * ks + c) * P + y * W;
            const scalar_t* p = attn + (b * kk + a * ks + c) * P + y * W;
            const int64_t lo = std::max<int64_t>(0, -shift), hi = std::min<int64_t>(W, W - shift);
            for (int64_t x = lo; x < hi; ++x) {
              kg[x] += l[x + shift] * qe[x + shift];
              vg[x] += p[x + shift] * ge[x + shift];
            }
          }
        }
      }
    }
  });
}

Geometry geometry(const torch::Tensor& q, int64_t kernel_size) {
  return Geometry{q.size(0), q.size(1), q.size(2), q.size(3), kernel_size};
}

void check(const torch::Tensor& t, int64_t dims, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.is_contiguous() && t.dim() == dims, name,
              " must be a contiguous CPU tensor with ", dims, " dimensions");
}

}  // namespace

std::vector<torch::Tensor> local_attention_forward(torch::Tensor q, torch::Tensor k, torch::Tensor v,
                                                   torch::Tensor rel_row, torch::Tensor rel_col,
                                                   int64_t kernel_size, bool mask_padding) {
  check(q, 4, "q"); check(k, 4, "k"); check(v, 4, "v"); check(rel_row, 2, "rel_row"); check(rel_col, 2, "rel_col");
  const Geometry g = geometry(q, kernel_size);
  auto out = torch::empty_like(q);
  auto attn = torch::empty({g.B, g.kk(), g.H, g.W}, q.options());
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "local_attention_forward", [&] {
    forward_rows<scalar_t>(q.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                           rel_row.data_ptr<scalar_t>(), rel_col.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(),
                           attn.data_ptr<scalar_t>(), g, mask_padding);
  });
  return {out, attn};
}

std::vector<torch::Tensor> local_attention_backward(torch::Tensor grad_out, torch::Tensor q, torch::Tensor k,
                                                    torch::Tensor v, torch::Tensor rel_row, torch::Tensor rel_col,
                                                    torch::Tensor attn, int64_t kernel_size) {
  check(grad_out, 4, "grad_out"); check(q, 4, "q"); check(k, 4, "k"); check(v, 4, "v"); check(attn, 4, "attn");
  const Geometry g = geometry(q, kernel_size);
  auto grad_logits = torch::empty_like(attn);
  auto grad_q = torch::empty_like(q);
  auto grad_k = torch::empty_like(k);
  auto grad_v = torch::empty_like(v);
  AT_DISPATCH_FLOATING_TYPES(q.scalar_type(), "local_attention_backward", [&] {
    backward_queries<scalar_t>(grad_out.data_ptr<scalar_t>(), k.data_ptr<scalar_t>(), v.data_ptr<scalar_t>(),
                               rel_row.data_ptr<scalar_t>(), rel_col.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                               grad_logits.data_ptr<scalar_t>(), grad_q.data_ptr<scalar_t>(), g);
    backward_keys<scalar_t>(grad_out.data_ptr<scalar_t>(), q.data_ptr<scalar_t>(), attn.data_ptr<scalar_t>(),
                            grad_logits.data_ptr<scalar_t>(), grad_k.data_ptr<scalar_t>(),
                            grad_v.data_ptr<scalar_t>(), g);
  });
  return {grad_q, grad_k, grad_v, grad_logits};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &local_attention_forward, "SASA windowed attention forward (CPU)");
  m.def("backward", &local_attention_backward, "SASA windowed attention backward (CPU)");
}
