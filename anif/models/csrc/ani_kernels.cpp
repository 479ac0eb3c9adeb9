// CPU kernels for the fused ANI ensemble (anif.models.extension): the ANI descriptor (AEV) of isolated
// molecules and the members' atomic networks, each with a hand-written backward pass.
//
//   anif::aev(coordinates (B, N, 3), elem (B, N), ..., cell) -> (B * N, features)
//     cell: empty for isolated molecules, or an OpenMM reduced box (3, 3) in the coordinates' unit whose
//     perpendicular widths are at least twice the radial cutoff (neighbours by the minimum image)
//   anif::networks(aev (B * N, features), elem (B * N), batch, depth, weights, biases, alpha) -> (M, B)
//   anif::aev_vjp(coordinates, elem, grad_aev (B * N, features), ...) -> (B, N, 3)    J^T grad_aev
//   anif::aev_jvp(coordinates, elem, tangent (B, N, 3), ...) -> (B * N, features)     J tangent
//
// The first two are TorchScript operators with autograd support (first derivatives only), so they run
// inside an openmm-torch TorchForce. The last two, with J = dAEV/dcoordinates, are plain products for
// force training (anif.training): forces are -J^T dE/dAEV, and the loss gradient needs J times the
// force residual. Same formulas as torchani's ANIRadial / ANIAngular with the cosine cutoff
// and CELU networks; results agree with torchani to float32 round-off.
//
// Networks: each thread takes whole members; for each element the member's layers run as register-
// blocked dense products (GCC vector extensions, 64-byte vectors), and when gradients are needed the
// member's input gradient dE_m/dAEV is computed right away, while its weights are still in cache. The
// autograd backward then only mixes these per-member gradients with the incoming weights.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstring>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif
#include <array>
#include <type_traits>
#include <vector>

using torch::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::tensor_list;

namespace {

template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef float type __attribute__((vector_size(64))); };
template <> struct VecOf<double> { typedef double type __attribute__((vector_size(64))); };
typedef int32_t vi32 __attribute__((vector_size(64)));

// Denormal floats (the AEV's far Gaussian tails reach them) make x86 arithmetic ~10x slower; each
// kernel thread flushes them to zero while it runs (changes results by < 1e-38).
struct FlushDenormals {
#if defined(__SSE__)
  unsigned int saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

template <typename V, typename T> inline V loadu(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T> inline void storeu(T* p, const V& v) { std::memcpy(p, &v, sizeof(V)); }

// ---------------------------------------------------------------------------------------------
// Dense layers with W (K x N, row-major) and TA rows of X or D at a time, one output vector wide:
//   dense:            Y[a, :N] = bias + X[a, :K] W
//   dense_transposed: Y[a, :K] = D[a, :N] W^T      (input gradients, from the same W still in cache)

// Xt: the TA rows of X packed k-major (Xt[k * TA + a]), so the broadcasts share one base pointer.
template <typename T, int TA>
inline void dense_tile(const T* Xt, int64_t K, const T* W, int64_t N, const T* bias, T* Y) {
  using V = typename VecOf<T>::type;
  constexpr int L = 64 / sizeof(T);
  int64_t j = 0;
  for (; j + L <= N; j += L) {
    V acc[TA];
    const V b = bias ? loadu<V>(bias + j) : V{};
    for (int a = 0; a < TA; ++a) acc[a] = b;
    for (int64_t k = 0; k < K; ++k) {
      const V w = loadu<V>(W + k * N + j);
      for (int a = 0; a < TA; ++a) acc[a] += Xt[k * TA + a] * w;
    }
    for (int a = 0; a < TA; ++a) storeu(Y + a * N + j, acc[a]);
  }
  for (; j < N; ++j)
    for (int a = 0; a < TA; ++a) {
      T s = bias ? bias[j] : T(0);
      for (int64_t k = 0; k < K; ++k) s += Xt[k * TA + a] * W[k * N + j];
      Y[a * N + j] = s;
    }
}

// Sums of the lanes of L vectors, as one vector: out[i] = sum(v[i]). Pairwise interleaved adds.
template <typename V, int L> inline V lane_sums(V* v) {
  static_assert(L == 16 || L == 8, "64-byte vectors of float or double");
  typedef typename std::conditional<L == 16, vi32, long long __attribute__((vector_size(64)))>::type Mask;
  Mask even, odd;
  for (int i = 0; i < L; ++i) even[i] = 2 * i, odd[i] = 2 * i + 1;
  for (int count = L; count > 1; count /= 2)
    for (int i = 0; i < count / 2; ++i)
      v[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], even) + __builtin_shuffle(v[2 * i], v[2 * i + 1], odd);
  return v[0];
}

// One row d (N) against L rows of W starting at row k0: y[k0 + i] = d . W[k0 + i, :] for i < rows.
template <typename T>
inline void dense_transposed_row(const T* d, const T* W, int64_t k0, int64_t rows, int64_t N, T* y) {
  using V = typename VecOf<T>::type;
  constexpr int L = 64 / sizeof(T);
  V acc[L];
  for (int i = 0; i < L; ++i) acc[i] = V{};
  int64_t j = 0;
  for (; j + L <= N; j += L) {
    const V dv = loadu<V>(d + j);
    for (int i = 0; i < L; ++i)
      if (i < rows) acc[i] += dv * loadu<V>(W + (k0 + i) * N + j);
  }
  const V sums = lane_sums<V, L>(acc);
  for (int i = 0; i < rows; ++i) {
    T s = sums[i];
    for (int64_t t = j; t < N; ++t) s += d[t] * W[(k0 + i) * N + t];
    y[k0 + i] = s;
  }
}

// Y[a, :K] = D[a, :N] W^T for n rows. Few rows: blocks of L rows of W (kept in L1) against every row
// of D; many rows: BLAS (single-threaded inside the members' parallel loop), which takes W^T as a view.
template <typename T>
void dense_transposed(const T* D, int64_t n, int64_t K, const T* W, int64_t N, T* Y) {
  constexpr int L = 64 / sizeof(T);
  if (n >= 16) {
    const auto options = torch::TensorOptions().dtype(c10::CppTypeToScalarType<T>::value);
    Tensor y = torch::from_blob(Y, {n, K}, options);
    at::mm_out(y, torch::from_blob(const_cast<T*>(D), {n, N}, options),
               torch::from_blob(const_cast<T*>(W), {K, N}, options).t());
    return;
  }
  for (int64_t k0 = 0; k0 < K; k0 += L)
    for (int64_t a = 0; a < n; ++a) dense_transposed_row(D + a * N, W, k0, std::min<int64_t>(L, K - k0), N, Y + a * K);
}

// n rows in tiles of 16, 8, 4, 2, 1 (each tile one pass over W, which stays in cache between tiles)
template <typename Tile>
inline void by_tiles(int64_t n, Tile&& tile) {
  int64_t a = 0;
  for (; a + 16 <= n; a += 16) tile(std::integral_constant<int, 16>{}, a);
  if (n - a >= 8) tile(std::integral_constant<int, 8>{}, a), a += 8;
  if (n - a >= 4) tile(std::integral_constant<int, 4>{}, a), a += 4;
  if (n - a >= 2) tile(std::integral_constant<int, 2>{}, a), a += 2;
  if (n - a >= 1) tile(std::integral_constant<int, 1>{}, a);
}

template <typename T>
void dense(const T* X, int64_t n, int64_t K, const T* W, int64_t N, const T* bias, T* Y) {
  std::vector<T> packed(16 * K);
  by_tiles(n, [&](auto ta, int64_t a) {
    constexpr int TA = decltype(ta)::value;
    for (int r = 0; r < TA; ++r)
      for (int64_t k = 0; k < K; ++k) packed[k * TA + r] = X[(a + r) * K + k];
    dense_tile<T, TA>(packed.data(), K, W, N, bias, Y + a * N);
  });
}


// ---------------------------------------------------------------------------------------------
// CELU (alpha) in place, and its derivative expressed through the activation a = celu(z):
// dcelu/dz = 1 where a > 0, else a / alpha + 1.

inline VecOf<float>::type exp_v(VecOf<float>::type x) {  // Cephes expf, ~1 ulp
  using V = VecOf<float>::type;
  x = x < -87.0f ? V{} - 87.0f : x;
  x = x > 88.0f ? V{} + 88.0f : x;
  const V t = x * 1.44269504088896341f + 0.5f;
  vi32 n = __builtin_convertvector(t, vi32);
  n += (__builtin_convertvector(n, V) > t);  // floor: true compares are -1
  const V fx = __builtin_convertvector(n, V);
  const V r = x - fx * 0.693359375f + fx * 2.12194440e-4f;
  V y = r * 1.9875691500E-4f + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * r * r + r + 1.0f;
  const vi32 bits = (n + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return y * scale;
}

inline void celu_(float* z, int64_t n, float alpha) {
  using V = VecOf<float>::type;
  const float inv = 1.0f / alpha;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    V v = loadu<V>(z + i);
    const V e = alpha * (exp_v((v < 0.0f ? v : V{}) * inv) - 1.0f);
    storeu(z + i, v > 0.0f ? v : e);
  }
  for (; i < n; ++i) z[i] = z[i] > 0.0f ? z[i] : alpha * std::expm1(z[i] * inv);
}

inline void celu_(double* z, int64_t n, double alpha) {
  for (int64_t i = 0; i < n; ++i) z[i] = z[i] > 0.0 ? z[i] : alpha * std::expm1(z[i] / alpha);
}

template <typename T> inline void times_celu_grad_(T* delta, const T* act, int64_t n, T alpha) {
  const T inv = T(1) / alpha;
  for (int64_t i = 0; i < n; ++i) delta[i] *= act[i] > T(0) ? T(1) : act[i] * inv + T(1);
}

// ---------------------------------------------------------------------------------------------
// Networks

// One member, one element: atomic energies of n atoms (X: n x features) into `energy`; with `grad`,
// dE_atom/dX (n x features) into `grad`. Layer l of the member: W (width[l] x width[l + 1]) and bias.
template <typename T>
void member_network(const T* X, int64_t n, const std::vector<int64_t>& width, const std::vector<const T*>& W,
                    const std::vector<const T*>& bias, T alpha, T* energy,
                    T* grad, std::vector<std::vector<T>>& act, std::vector<T>& delta_a,
                    std::vector<T>& delta_b) {
  const int64_t depth = static_cast<int64_t>(W.size());
  const T* h = X;
  for (int64_t l = 0; l + 1 < depth; ++l) {
    const int64_t in = width[l], out = width[l + 1];
    act[l].resize(n * out);
    dense(h, n, in, W[l], out, bias[l], act[l].data());
    celu_(act[l].data(), n * out, alpha);
    h = act[l].data();
  }
  const int64_t last = width[depth - 1];
  const T* w = W[depth - 1];
  for (int64_t a = 0; a < n; ++a) {
    T s = bias[depth - 1][0];
    for (int64_t k = 0; k < last; ++k) s += h[a * last + k] * w[k];
    energy[a] = s;
  }
  if (grad == nullptr) return;
  // delta = dE/d(activation of layer l), walked back to dE/dX
  delta_a.resize(n * last);
  for (int64_t a = 0; a < n; ++a) std::memcpy(&delta_a[a * last], w, last * sizeof(T));
  for (int64_t l = depth - 2; l >= 0; --l) {
    const int64_t in = width[l], out = width[l + 1];
    times_celu_grad_(delta_a.data(), act[l].data(), n * out, alpha);
    T* target = l == 0 ? grad : (delta_b.resize(n * in), delta_b.data());
    dense_transposed(delta_a.data(), n, in, W[l], out, target);
    if (l > 0) std::swap(delta_a, delta_b);
  }
}

struct NetworkArgs {
  std::vector<Tensor> weights, biases;  // element-major: [e * depth + l]: (M, in, out) and (M, out)
  int64_t depth, members;
};

// Rows of each element (ascending) and the per-element offsets into that order.
void group_by_element(const Tensor& elem, int64_t num_elements, std::vector<int64_t>& order,
                      std::vector<int64_t>& offsets) {
  const int64_t* e = elem.data_ptr<int64_t>();
  const int64_t rows = elem.numel();
  offsets.assign(num_elements + 1, 0);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(e[r] < num_elements, "anif::networks: element index ", e[r], " has no network");
    if (e[r] >= 0) ++offsets[e[r] + 1];
  }
  for (int64_t s = 0; s < num_elements; ++s) offsets[s + 1] += offsets[s];
  order.resize(offsets[num_elements]);
  std::vector<int64_t> fill(offsets.begin(), offsets.end() - 1);
  for (int64_t r = 0; r < rows; ++r)
    if (e[r] >= 0) order[fill[e[r]]++] = r;
}

// Member energies (M, batch); with `grad` defined (M, atoms, features), dE_m/dAEV of every atom in
// element-grouped order.
template <typename T>
Tensor networks_forward(const Tensor& aev, const Tensor& elem, int64_t batch, const NetworkArgs& net,
                        double alpha, const std::vector<int64_t>& order, const std::vector<int64_t>& offsets,
                        Tensor* grad) {
  const int64_t rows = aev.size(0), features = aev.size(1), per_molecule = batch > 0 ? rows / batch : 0;
  const int64_t num_elements = static_cast<int64_t>(offsets.size()) - 1, atoms = offsets.back();
  const int64_t members = net.members, depth = net.depth;
  const T* x = aev.data_ptr<T>();
  // AEV rows grouped by element, contiguous
  std::vector<T> grouped(atoms * features);
  for (int64_t i = 0; i < atoms; ++i) std::memcpy(&grouped[i * features], x + order[i] * features, features * sizeof(T));
  Tensor energies = torch::zeros({members, batch}, aev.options());
  T* out = energies.data_ptr<T>();
  T* g = grad ? grad->data_ptr<T>() : nullptr;
  const T a = static_cast<T>(alpha);
  at::parallel_for(0, members, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    std::vector<std::vector<T>> act(depth);
    std::vector<T> delta_a, delta_b, atomic;
    std::vector<const T*> W(depth), bias(depth);
    for (int64_t m = begin; m < end; ++m)
      for (int64_t s = 0; s < num_elements; ++s) {
        const int64_t n = offsets[s + 1] - offsets[s];
        if (n == 0) continue;
        std::vector<int64_t> width{features};
        for (int64_t l = 0; l < depth; ++l) {
          const Tensor& w = net.weights[s * depth + l];  // (M, in, out)
          const int64_t in = w.size(1), outs = w.size(2);
          width.push_back(outs);
          W[l] = w.data_ptr<T>() + m * in * outs;
          bias[l] = net.biases[s * depth + l].data_ptr<T>() + m * outs;
        }
        atomic.resize(n);
        T* gm = g ? g + (m * atoms + offsets[s]) * features : nullptr;
        member_network<T>(&grouped[offsets[s] * features], n, width, W, bias, a, atomic.data(), gm, act,
                          delta_a, delta_b);
        for (int64_t i = 0; i < n; ++i) out[m * batch + order[offsets[s] + i] / per_molecule] += atomic[i];
      }
  });
  return energies;
}

class NetworksFunction : public torch::autograd::Function<NetworksFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, Tensor aev, Tensor elem, int64_t batch, int64_t depth,
                        std::vector<Tensor> weights, std::vector<Tensor> biases, double alpha) {
    TORCH_CHECK(aev.device().is_cpu(), "anif::networks runs on the CPU");
    TORCH_CHECK(depth > 0 && !weights.empty() && weights.size() % depth == 0 &&
                    weights.size() == biases.size(),
                "anif::networks: weights and biases must hold depth layers per element");
    TORCH_CHECK(aev.dim() == 2 && elem.numel() == aev.size(0), "anif::networks: aev (rows, features), elem (rows,)");
    TORCH_CHECK(batch > 0 && aev.size(0) % batch == 0, "anif::networks: rows must be batch * atoms per molecule");
    const bool need_grad = aev.requires_grad();
    aev = aev.detach().contiguous();
    elem = elem.to(torch::kLong).contiguous();
    NetworkArgs net{weights, biases, depth, weights[0].size(0)};
    for (size_t i = 0; i < weights.size(); ++i) {
      const int64_t in = i % depth == 0 ? aev.size(1) : weights[i - 1].size(2);
      TORCH_CHECK(weights[i].dim() == 3 && weights[i].size(0) == net.members && weights[i].size(1) == in &&
                      biases[i].numel() == net.members * weights[i].size(2) && (i % depth != depth - 1 || weights[i].size(2) == 1),
                  "anif::networks: layer ", i % depth, " of element ", i / depth, " has the wrong shape");
    }
    for (auto& t : net.weights) t = t.to(aev.scalar_type()).contiguous();
    for (auto& t : net.biases) t = t.to(aev.scalar_type()).contiguous();
    std::vector<int64_t> order, offsets;
    group_by_element(elem, static_cast<int64_t>(weights.size()) / depth, order, offsets);
    Tensor grad = need_grad ? torch::empty({net.members, offsets.back(), aev.size(1)}, aev.options()) : Tensor();
    Tensor energies;
    AT_DISPATCH_FLOATING_TYPES(aev.scalar_type(), "anif::networks", [&] {
      energies = networks_forward<scalar_t>(aev, elem, batch, net, alpha, order, offsets, need_grad ? &grad : nullptr);
    });
    if (need_grad) {
      ctx->save_for_backward({grad, torch::tensor(order, torch::kLong)});
      ctx->saved_data["rows"] = aev.size(0);
      ctx->saved_data["batch"] = batch;
    }
    return energies;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const Tensor& grad = saved[0];  // (M, atoms, features): dE_m/dAEV
    const Tensor order = saved[1];
    const int64_t rows = ctx->saved_data["rows"].toInt(), batch = ctx->saved_data["batch"].toInt();
    const Tensor weights = grad_outputs[0].to(grad.scalar_type()).contiguous();  // (M, batch)
    Tensor aev_grad = torch::zeros({rows, grad.size(2)}, grad.options());
    AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "anif::networks_backward", [&] {
      const int64_t members = grad.size(0), atoms = grad.size(1), features = grad.size(2), per = rows / batch;
      const scalar_t* g = grad.data_ptr<scalar_t>();
      const scalar_t* w = weights.data_ptr<scalar_t>();
      const int64_t* rows_of = order.data_ptr<int64_t>();
      scalar_t* out = aev_grad.data_ptr<scalar_t>();
      at::parallel_for(0, atoms, std::max<int64_t>(16, 65536 / (members * features + 1)), [&](int64_t begin, int64_t end) {
        FlushDenormals flush;
        for (int64_t i = begin; i < end; ++i) {
          scalar_t* target = out + rows_of[i] * features;
          for (int64_t m = 0; m < members; ++m) {
            const scalar_t c = w[m * batch + rows_of[i] / per];
            const scalar_t* source = g + (m * atoms + i) * features;
            for (int64_t f = 0; f < features; ++f) target[f] += c * source[f];
          }
        }
      });
    });
    return {aev_grad, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// ---------------------------------------------------------------------------------------------
// AEV of isolated molecules (torchani's ANIRadial and ANIAngular with the cosine cutoff)

struct AevParams {
  std::vector<double> radial_shifts, angular_shifts, cos_sections, sin_sections;
  double radial_eta, radial_cutoff, angular_eta, zeta, angular_cutoff;
  std::vector<int64_t> triu;  // species x species -> pair index
  int64_t species;
  int64_t radial_size() const { return species * static_cast<int64_t>(radial_shifts.size()); }
  int64_t angular_block() const { return static_cast<int64_t>(angular_shifts.size() * cos_sections.size()); }
  int64_t features() const { return radial_size() + species * (species + 1) / 2 * angular_block(); }
  // zeta when it is a positive integer (powers by squaring), else 0 (std::pow)
  int64_t integer_zeta() const { return double(int64_t(zeta)) == zeta && zeta >= 1 ? int64_t(zeta) : 0; }
};

inline void exp_inplace(float* x, int64_t n) {
  using V = VecOf<float>::type;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) storeu(x + i, exp_v(loadu<V>(x + i)));
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}
inline void exp_inplace(double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) x[i] = std::exp(x[i]);
}

// out[k] = exp(-eta (x - shifts[k])^2): the Gaussians of the radial terms and of the angular terms' mean distance
template <typename T> inline void gaussians(T x, const std::vector<double>& shifts, double eta, T* out) {
  const int64_t count = static_cast<int64_t>(shifts.size());
  for (int64_t k = 0; k < count; ++k) {
    const T u = x - T(shifts[k]);
    out[k] = T(-eta) * u * u;
  }
  exp_inplace(out, count);
}

template <typename T> inline T power(T base, int64_t n) {  // n >= 0, by squaring
  T result = T(1);
  while (n > 0) {
    if (n & 1) result *= base;
    base *= base;
    n >>= 1;
  }
  return result;
}

// One centre atom's neighbourhood: the other real atoms of its molecule within the radial cutoff.
template <typename T> struct Neighbour {
  int64_t row, elem;
  T v[3], d, fc, dfc;        // radial cutoff
  T fca, dfca;               // angular cutoff (angular neighbours only)
  bool angular;
};

// The minimum image of v in an OpenMM reduced box (rows a, b, c: a along x, b in the xy plane), as OpenMM
// takes it: shift along c, then b, then a. Exact when every perpendicular width is at least 2 * cutoff.
template <typename T> inline void minimum_image(const T* box, const T* inverse_diagonal, T* v) {
  for (int r = 2; r >= 0; --r) {
    const T shift = std::nearbyint(v[r] * inverse_diagonal[r]);
    if (shift != T(0))
      for (int c = 0; c <= r; ++c) v[c] -= shift * box[r * 3 + c];
  }
}

template <typename T>
void neighbours_of(const T* x, const int64_t* e, int64_t centre, int64_t first, int64_t n, const AevParams& p,
                   const T* box, std::vector<Neighbour<T>>& out) {
  out.clear();
  const T rc2 = T(p.radial_cutoff * p.radial_cutoff), rca2 = T(p.angular_cutoff * p.angular_cutoff);
  const T kr = T(M_PI / p.radial_cutoff), ka = T(M_PI / p.angular_cutoff);
  const T* xc = x + centre * 3;
  const T inverse_diagonal[3] = {box ? T(1) / box[0] : T(0), box ? T(1) / box[4] : T(0), box ? T(1) / box[8] : T(0)};
  for (int64_t j = first; j < first + n; ++j) {
    if (j == centre || e[j] < 0) continue;
    Neighbour<T> nb;
    for (int c = 0; c < 3; ++c) nb.v[c] = x[j * 3 + c] - xc[c];
    if (box) minimum_image(box, inverse_diagonal, nb.v);
    const T d2 = nb.v[0] * nb.v[0] + nb.v[1] * nb.v[1] + nb.v[2] * nb.v[2];
    if (d2 > rc2) continue;
    nb.row = j;
    nb.elem = e[j];
    nb.d = std::sqrt(d2);
    nb.fc = T(0.5) * std::cos(nb.d * kr) + T(0.5);
    nb.dfc = T(-0.5) * kr * std::sin(nb.d * kr);
    nb.angular = d2 <= rca2;
    nb.fca = T(0.5) * std::cos(nb.d * ka) + T(0.5);
    nb.dfca = T(-0.5) * ka * std::sin(nb.d * ka);
    out.push_back(nb);
  }
}

// Per-triple angular quantities shared by the forward and backward passes.
template <typename T> struct Triple {
  T cc, sn, mean, fcc;
};

template <typename T> inline Triple<T> triple_of(const Neighbour<T>& a, const Neighbour<T>& b) {
  Triple<T> t;
  const T dot = a.v[0] * b.v[0] + a.v[1] * b.v[1] + a.v[2] * b.v[2];
  t.cc = T(0.95) * dot / std::max(a.d * b.d, T(1e-10));  // cos of the angle torchani feeds to acos
  t.sn = std::sqrt(std::max(T(1) - t.cc * t.cc, T(0)));   // its sine
  t.mean = (a.d + b.d) / 2;
  t.fcc = a.fca * b.fca;
  return t;
}

// The angular factors f1[z] = 2 ((1 + cos(theta - section_z)) / 2)^zeta of a triple, with theta = acos(cc)
// taken through cos(theta - s) = cc cos(s) + sn sin(s); with df1, also d f1[z] / d cc (d sn / d cc = -cc / sn).
template <typename T> inline void angular_factors(const AevParams& p, const Triple<T>& t, T* f1, T* df1) {
  const int64_t zeta = p.integer_zeta();
  for (size_t z = 0; z < p.cos_sections.size(); ++z) {
    const T cs = T(p.cos_sections[z]), ss = T(p.sin_sections[z]);
    const T base = (T(1) + t.cc * cs + t.sn * ss) / 2;
    const T lower = zeta ? power(base, zeta - 1) : std::pow(base, T(p.zeta - 1));
    f1[z] = T(2) * lower * base;
    if (df1) df1[z] = T(p.zeta) * lower * (cs - (t.sn > T(0) ? t.cc / t.sn : T(0)) * ss);
  }
}

// body(i, j, t) for every pair i < j of angular neighbours, with the triple's angular factors f1 (and their
// derivatives df1 unless null) and the Gaussians g of its mean distance filled in.
template <typename T, typename Body>
inline void for_each_triple(const std::vector<Neighbour<T>>& nbs, const AevParams& p, T* f1, T* df1, T* g, Body&& body) {
  for (size_t i = 0; i < nbs.size(); ++i) {
    if (!nbs[i].angular) continue;
    for (size_t j = i + 1; j < nbs.size(); ++j) {
      if (!nbs[j].angular) continue;
      const Triple<T> t = triple_of(nbs[i], nbs[j]);
      angular_factors(p, t, f1, df1);
      gaussians(t.mean, p.angular_shifts, p.angular_eta, g);
      body(i, j, t);
    }
  }
}

template <typename T>
void aev_forward(const T* x, const int64_t* e, int64_t molecules, int64_t n, const AevParams& p, const T* box, T* out) {
  const int64_t R = p.radial_shifts.size(), A = p.angular_shifts.size(), Z = p.cos_sections.size();
  const int64_t F = p.features(), radial = p.radial_size(), block = p.angular_block();
  at::parallel_for(0, molecules * n, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    std::vector<Neighbour<T>> nbs;
    std::vector<T> g(std::max(R, A)), f1(Z);
    for (int64_t c = begin; c < end; ++c) {
      T* row = out + c * F;
      std::fill(row, row + F, T(0));
      if (e[c] < 0) continue;
      neighbours_of(x, e, c, (c / n) * n, n, p, box, nbs);
      for (const auto& nb : nbs) {
        gaussians(nb.d, p.radial_shifts, p.radial_eta, g.data());
        T* target = row + nb.elem * R;
        for (int64_t k = 0; k < R; ++k) target[k] += T(0.25) * g[k] * nb.fc;
      }
      for_each_triple(nbs, p, f1.data(), static_cast<T*>(nullptr), g.data(), [&](size_t i, size_t j, const Triple<T>& t) {
        T* target = row + radial + p.triu[nbs[i].elem * p.species + nbs[j].elem] * block;
        for (int64_t a = 0; a < A; ++a) {
          const T w = g[a] * t.fcc;
          for (int64_t z = 0; z < Z; ++z) target[a * Z + z] += w * f1[z];
        }
      });
    }
  });
}

// dL/dx (molecules * n, 3) from dL/dAEV (molecules * n, F).
template <typename T>
void aev_backward(const T* x, const int64_t* e, int64_t molecules, int64_t n, const AevParams& p, const T* box,
                  const T* grad_aev, T* grad_x) {
  const int64_t R = p.radial_shifts.size(), A = p.angular_shifts.size(), Z = p.cos_sections.size();
  const int64_t F = p.features(), radial = p.radial_size(), block = p.angular_block(), rows = molecules * n;
  const int threads = at::get_num_threads();
  std::vector<T> partial(static_cast<size_t>(threads) * rows * 3, T(0));
  at::parallel_for(0, rows, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    T* gx = partial.data() + static_cast<size_t>(at::get_thread_num()) * rows * 3;
    std::vector<Neighbour<T>> nbs;
    std::vector<T> g(std::max(R, A)), f1(Z), df1(Z), h(Z), k2(Z);
    for (int64_t c = begin; c < end; ++c) {
      if (e[c] < 0) continue;
      const T* gr = grad_aev + c * F;
      neighbours_of(x, e, c, (c / n) * n, n, p, box, nbs);
      for (const auto& nb : nbs) {
        gaussians(nb.d, p.radial_shifts, p.radial_eta, g.data());
        const T* gk = gr + nb.elem * R;
        T dldd = 0;
        for (int64_t k = 0; k < R; ++k) {
          const T u = nb.d - T(p.radial_shifts[k]);
          dldd += gk[k] * T(0.25) * g[k] * (T(-2 * p.radial_eta) * u * nb.fc + nb.dfc);
        }
        for (int c3 = 0; c3 < 3; ++c3) {
          const T f = dldd * nb.v[c3] / nb.d;
          gx[nb.row * 3 + c3] += f;
          gx[c * 3 + c3] -= f;
        }
      }
      for_each_triple(nbs, p, f1.data(), df1.data(), g.data(), [&](size_t i, size_t j, const Triple<T>& t) {
        const auto& a = nbs[i];
        const auto& b = nbs[j];
        const T* gb = gr + radial + p.triu[a.elem * p.species + b.elem] * block;
        std::fill(h.begin(), h.end(), T(0));
        std::fill(k2.begin(), k2.end(), T(0));
        for (int64_t q = 0; q < A; ++q) {
          const T dmean = T(-2 * p.angular_eta) * (t.mean - T(p.angular_shifts[q]));
          for (int64_t z = 0; z < Z; ++z) {
            const T w = gb[q * Z + z] * g[q];
            h[z] += w;
            k2[z] += w * dmean;
          }
        }
        T dl_dcc = 0, dl_dmean = 0, dl_dfcc = 0;
        for (int64_t z = 0; z < Z; ++z) {
          dl_dcc += h[z] * df1[z];
          dl_dmean += k2[z] * f1[z];
          dl_dfcc += h[z] * f1[z];
        }
        dl_dcc *= t.fcc;
        dl_dmean *= t.fcc;
        const T denominator = a.d * b.d;
        const T dl_dc = denominator > T(1e-10) ? T(0.95) * dl_dcc : T(0);
        const T c_over = t.cc / T(0.95);
        const T dl_dda = dl_dmean / 2 + dl_dfcc * b.fca * a.dfca;
        const T dl_ddb = dl_dmean / 2 + dl_dfcc * a.fca * b.dfca;
        for (int c3 = 0; c3 < 3; ++c3) {
          const T ga = dl_dc * (b.v[c3] / denominator - c_over * a.v[c3] / (a.d * a.d)) + dl_dda * a.v[c3] / a.d;
          const T gb3 = dl_dc * (a.v[c3] / denominator - c_over * b.v[c3] / (b.d * b.d)) + dl_ddb * b.v[c3] / b.d;
          gx[a.row * 3 + c3] += ga;
          gx[b.row * 3 + c3] += gb3;
          gx[c * 3 + c3] -= ga + gb3;
        }
      });
    }
  });
  for (int t = 0; t < threads; ++t) {
    const T* src = partial.data() + static_cast<size_t>(t) * rows * 3;
    for (int64_t i = 0; i < rows * 3; ++i) grad_x[i] += src[i];
  }
}

// J u (molecules * n, F): the AEV's derivative along the coordinate displacement u (molecules * n, 3),
// the same terms as aev_forward, each differentiated through its distances and angle.
template <typename T>
void aev_directional(const T* x, const int64_t* e, int64_t molecules, int64_t n, const AevParams& p, const T* box,
                     const T* u, T* out) {
  const int64_t R = p.radial_shifts.size(), A = p.angular_shifts.size(), Z = p.cos_sections.size();
  const int64_t F = p.features(), radial = p.radial_size(), block = p.angular_block();
  at::parallel_for(0, molecules * n, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals flush;
    std::vector<Neighbour<T>> nbs;
    std::vector<T> g(std::max(R, A)), f1(Z), df1(Z);
    std::vector<std::array<T, 4>> du;  // per neighbour: u relative to the centre, and d(distance)
    for (int64_t c = begin; c < end; ++c) {
      T* row = out + c * F;
      std::fill(row, row + F, T(0));
      if (e[c] < 0) continue;
      neighbours_of(x, e, c, (c / n) * n, n, p, box, nbs);
      const T* uc = u + c * 3;
      du.resize(nbs.size());
      for (size_t i = 0; i < nbs.size(); ++i) {
        const T* ur = u + nbs[i].row * 3;
        T dot = 0;
        for (int c3 = 0; c3 < 3; ++c3) {
          du[i][c3] = ur[c3] - uc[c3];
          dot += nbs[i].v[c3] * du[i][c3];
        }
        du[i][3] = dot / nbs[i].d;
      }
      for (size_t i = 0; i < nbs.size(); ++i) {
        const auto& nb = nbs[i];
        gaussians(nb.d, p.radial_shifts, p.radial_eta, g.data());
        T* target = row + nb.elem * R;
        for (int64_t k = 0; k < R; ++k) {
          const T s = nb.d - T(p.radial_shifts[k]);
          target[k] += T(0.25) * g[k] * (T(-2 * p.radial_eta) * s * nb.fc + nb.dfc) * du[i][3];
        }
      }
      for_each_triple(nbs, p, f1.data(), df1.data(), g.data(), [&](size_t i, size_t j, const Triple<T>& t) {
        const auto& a = nbs[i];
        const auto& b = nbs[j];
        const T dda = du[i][3], ddb = du[j][3];
        const T denominator = a.d * b.d;
        T dcc = 0;
        if (denominator > T(1e-10)) {
          T cross = 0;
          for (int c3 = 0; c3 < 3; ++c3) cross += du[i][c3] * b.v[c3] + a.v[c3] * du[j][c3];
          dcc = T(0.95) * cross / denominator - t.cc * (dda / a.d + ddb / b.d);
        }
        const T dmean = (dda + ddb) / 2;
        const T dfcc = a.dfca * dda * b.fca + a.fca * b.dfca * ddb;
        T* target = row + radial + p.triu[a.elem * p.species + b.elem] * block;
        for (int64_t q = 0; q < A; ++q) {
          const T dg = g[q] * T(-2 * p.angular_eta) * (t.mean - T(p.angular_shifts[q])) * dmean;
          const T w = dg * t.fcc + g[q] * dfcc, wc = g[q] * t.fcc * dcc;
          for (int64_t z = 0; z < Z; ++z) target[q * Z + z] += w * f1[z] + wc * df1[z];
        }
      });
    }
  });
}

AevParams aev_params(const Tensor& radial_shifts, double radial_eta, double radial_cutoff, const Tensor& angular_shifts,
                     const Tensor& sections, double angular_eta, double zeta, double angular_cutoff,
                     const Tensor& triu_index) {
  AevParams p;
  auto to_vector = [](const Tensor& t) {
    const Tensor c = t.detach().to(torch::kCPU, torch::kDouble).contiguous();
    return std::vector<double>(c.data_ptr<double>(), c.data_ptr<double>() + c.numel());
  };
  p.radial_shifts = to_vector(radial_shifts);
  p.angular_shifts = to_vector(angular_shifts);
  for (double s : to_vector(sections)) p.cos_sections.push_back(std::cos(s)), p.sin_sections.push_back(std::sin(s));
  p.radial_eta = radial_eta;
  p.radial_cutoff = radial_cutoff;
  p.angular_eta = angular_eta;
  p.zeta = zeta;
  p.angular_cutoff = angular_cutoff;
  const Tensor triu = triu_index.detach().to(torch::kCPU, torch::kLong).contiguous();
  p.species = triu.size(0);
  p.triu.assign(triu.data_ptr<int64_t>(), triu.data_ptr<int64_t>() + triu.numel());
  TORCH_CHECK(radial_cutoff >= angular_cutoff, "anif::aev: the angular cutoff must not exceed the radial cutoff");
  return p;
}

// Checked, contiguous inputs of the AEV operators; box: empty (isolated molecules) or the (3, 3) cell.
struct AevInputs {
  AevParams p;
  Tensor x, e, box;
};

template <typename T> const T* box_pointer(const AevInputs& in) {
  return in.box.numel() ? in.box.data_ptr<T>() : nullptr;
}

AevInputs aev_inputs(const Tensor& coordinates, const Tensor& elem, const Tensor& radial_shifts, double radial_eta,
                     double radial_cutoff, const Tensor& angular_shifts, const Tensor& sections, double angular_eta,
                     double zeta, double angular_cutoff, const Tensor& triu_index, const Tensor& cell = Tensor()) {
  TORCH_CHECK(coordinates.device().is_cpu(), "anif::aev runs on the CPU");
  TORCH_CHECK(coordinates.dim() == 3 && coordinates.size(2) == 3 && elem.dim() == 2 &&
                  elem.size(0) == coordinates.size(0) && elem.size(1) == coordinates.size(1),
              "anif::aev: coordinates (B, N, 3) and elem (B, N)");
  const Tensor x = coordinates.detach().contiguous();
  const Tensor box = cell.defined() ? cell.detach().to(x.scalar_type()).contiguous() : x.new_empty({0});
  TORCH_CHECK(box.numel() == 0 || (box.dim() == 2 && box.size(0) == 3 && box.size(1) == 3),
              "anif::aev: cell must be empty or (3, 3)");
  AevInputs in{aev_params(radial_shifts, radial_eta, radial_cutoff, angular_shifts, sections, angular_eta, zeta,
                          angular_cutoff, triu_index),
               x, elem.to(torch::kLong).contiguous(), box};
  TORCH_CHECK(in.e.numel() == 0 || in.e.max().item<int64_t>() < in.p.species, "anif::aev: element index out of range");
  return in;
}

// J^T grad_aev: (B, N, 3) from (B * N, features).
Tensor vjp(const AevInputs& in, const Tensor& grad_aev) {
  const Tensor g = grad_aev.to(in.x.scalar_type()).contiguous();
  TORCH_CHECK(g.dim() == 2 && g.size(0) == in.e.numel() && g.size(1) == in.p.features(),
              "anif::aev_vjp: grad_aev must be (B * N, features)");
  Tensor grad_x = torch::zeros_like(in.x);
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "anif::aev_vjp", [&] {
    aev_backward<scalar_t>(in.x.data_ptr<scalar_t>(), in.e.data_ptr<int64_t>(), in.x.size(0), in.x.size(1), in.p,
                           box_pointer<scalar_t>(in), g.data_ptr<scalar_t>(), grad_x.data_ptr<scalar_t>());
  });
  return grad_x;
}

class AevFunction : public torch::autograd::Function<AevFunction> {
 public:
  static Tensor forward(AutogradContext* ctx, Tensor coordinates, Tensor elem, Tensor radial_shifts, double radial_eta,
                        double radial_cutoff, Tensor angular_shifts, Tensor sections, double angular_eta, double zeta,
                        double angular_cutoff, Tensor triu_index, Tensor cell) {
    const AevInputs in = aev_inputs(coordinates, elem, radial_shifts, radial_eta, radial_cutoff, angular_shifts,
                                    sections, angular_eta, zeta, angular_cutoff, triu_index, cell);
    const int64_t molecules = in.x.size(0), n = in.x.size(1);
    Tensor out = torch::empty({molecules * n, in.p.features()}, in.x.options());
    AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "anif::aev", [&] {
      aev_forward<scalar_t>(in.x.data_ptr<scalar_t>(), in.e.data_ptr<int64_t>(), molecules, n, in.p,
                            box_pointer<scalar_t>(in), out.data_ptr<scalar_t>());
    });
    ctx->save_for_backward({in.x, in.e, radial_shifts, angular_shifts, sections, triu_index, in.box});
    ctx->saved_data["radial"] = c10::List<double>({radial_eta, radial_cutoff});
    ctx->saved_data["angular"] = c10::List<double>({angular_eta, zeta, angular_cutoff});
    return out;
  }

  static tensor_list backward(AutogradContext* ctx, tensor_list grad_outputs) {
    const auto s = ctx->get_saved_variables();
    const auto radial = ctx->saved_data["radial"].toDoubleList();
    const auto angular = ctx->saved_data["angular"].toDoubleList();
    const AevInputs in{aev_params(s[2], radial.get(0), radial.get(1), s[3], s[4], angular.get(0), angular.get(1),
                                  angular.get(2), s[5]),
                       s[0], s[1], s[6]};
    return {vjp(in, grad_outputs[0]), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(),
            Tensor(), Tensor(), Tensor()};
  }
};

Tensor aev(Tensor coordinates, Tensor elem, Tensor radial_shifts, double radial_eta, double radial_cutoff,
           Tensor angular_shifts, Tensor sections, double angular_eta, double zeta, double angular_cutoff,
           Tensor triu_index, c10::optional<Tensor> cell) {
  return AevFunction::apply(coordinates, elem, radial_shifts, radial_eta, radial_cutoff, angular_shifts, sections,
                            angular_eta, zeta, angular_cutoff, triu_index,
                            cell.has_value() ? *cell : coordinates.new_empty({0}));
}

Tensor aev_vjp(Tensor coordinates, Tensor elem, Tensor grad_aev, Tensor radial_shifts, double radial_eta,
               double radial_cutoff, Tensor angular_shifts, Tensor sections, double angular_eta, double zeta,
               double angular_cutoff, Tensor triu_index) {
  return vjp(aev_inputs(coordinates, elem, radial_shifts, radial_eta, radial_cutoff, angular_shifts, sections,
                        angular_eta, zeta, angular_cutoff, triu_index),
             grad_aev);
}

Tensor aev_jvp(Tensor coordinates, Tensor elem, Tensor tangent, Tensor radial_shifts, double radial_eta,
               double radial_cutoff, Tensor angular_shifts, Tensor sections, double angular_eta, double zeta,
               double angular_cutoff, Tensor triu_index) {
  const AevInputs in = aev_inputs(coordinates, elem, radial_shifts, radial_eta, radial_cutoff, angular_shifts,
                                  sections, angular_eta, zeta, angular_cutoff, triu_index);
  const Tensor u = tangent.to(in.x.scalar_type()).contiguous();
  TORCH_CHECK(u.sizes() == in.x.sizes(), "anif::aev_jvp: tangent must be shaped like coordinates");
  const int64_t molecules = in.x.size(0), n = in.x.size(1);
  Tensor out = torch::empty({molecules * n, in.p.features()}, in.x.options());
  AT_DISPATCH_FLOATING_TYPES(in.x.scalar_type(), "anif::aev_jvp", [&] {
    aev_directional<scalar_t>(in.x.data_ptr<scalar_t>(), in.e.data_ptr<int64_t>(), molecules, n, in.p,
                              box_pointer<scalar_t>(in), u.data_ptr<scalar_t>(), out.data_ptr<scalar_t>());
  });
  return out;
}

Tensor networks(Tensor aev, Tensor elem, int64_t batch, int64_t depth, std::vector<Tensor> weights,
                std::vector<Tensor> biases, double alpha) {
  return NetworksFunction::apply(aev, elem, batch, depth, weights, biases, alpha);
}

}  // namespace

TORCH_LIBRARY(anif, m) {
  m.def("aev(Tensor coordinates, Tensor elem, Tensor radial_shifts, float radial_eta, float radial_cutoff, "
        "Tensor angular_shifts, Tensor sections, float angular_eta, float zeta, float angular_cutoff, "
        "Tensor triu_index, Tensor? cell=None) -> Tensor",
        &aev);
  m.def("aev_vjp(Tensor coordinates, Tensor elem, Tensor grad_aev, Tensor radial_shifts, float radial_eta, "
        "float radial_cutoff, Tensor angular_shifts, Tensor sections, float angular_eta, float zeta, "
        "float angular_cutoff, Tensor triu_index) -> Tensor",
        &aev_vjp);
  m.def("aev_jvp(Tensor coordinates, Tensor elem, Tensor tangent, Tensor radial_shifts, float radial_eta, "
        "float radial_cutoff, Tensor angular_shifts, Tensor sections, float angular_eta, float zeta, "
        "float angular_cutoff, Tensor triu_index) -> Tensor",
        &aev_jvp);
  m.def("networks(Tensor aev, Tensor elem, int batch, int depth, Tensor[] weights, Tensor[] biases, "
        "float alpha) -> Tensor",
        &networks);
}
