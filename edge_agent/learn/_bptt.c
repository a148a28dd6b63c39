/* The float LSTM's time loop for training (edge_agent/learn/train.py), in C.
 *
 * One call runs one layer over every timestep of a batch of windows, forward
 * (keeping what backpropagation needs) or backward (the gate gradients dz at
 * every step). Windows are independent, so each is stepped alone: its h, c and
 * the recurrent weights (4H x H) stay in L1 for the whole window. Everything
 * that is one large matrix product over all timesteps (the input projection,
 * the weight gradients, the gradient passed to the layer below) stays in numpy,
 * where BLAS does it well; only the sequential part is here.
 *
 * Two element types: float32 (training) and float64 (the gradient checks and
 * the lockstep comparison with PyTorch). float32 uses an exp built from a
 * polynomial (about 2 ulp) that the compiler vectorizes; float64 uses libm.
 * Gate order is PyTorch's: i, f, g, o. mask[b, t] is 1 inside a window and 0
 * after its length: the state is then carried unchanged, as in the numpy code.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

/* exp(v) for float32: v = k ln2 + r, |r| <= ln2/2, exp(r) by its Taylor
 * polynomial to degree 6, 2**k by building the float's exponent bits. */
static inline float exp_f32(float v) {
    v = v < -87.0f ? -87.0f : (v > 88.0f ? 88.0f : v);
    float k = __builtin_floorf(v * 1.44269504088896341f + 0.5f);
    float r = v - k * 0.693145751953125f;  /* ln2 split in two for an exact k*ln2 */
    r = r - k * 1.428606765330187045e-06f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline float sigmoid_f32(float v) { return 1.0f / (1.0f + exp_f32(-v)); }
static inline float tanh_f32(float v) { return 2.0f / (1.0f + exp_f32(-2.0f * v)) - 1.0f; }
static inline double sigmoid_f64(double v) { return 1.0 / (1.0 + exp(-v)); }
static inline double tanh_f64(double v) { return tanh(v); }

/* The same loops for both types. Shapes: proj, acts, dz [n, T, 4H]; w_t (the
 * recurrent weights transposed) [H, 4H]; w [4H, H]; mask [n, T]; every other
 * array [n, T, H]. H is at most MAX_H (the caller checks). */
#define MAX_H 1024
#define DEFINE_LOOPS(TYPE, SUF)                                                                   \
    static void forward_##SUF(Py_ssize_t n, Py_ssize_t T, Py_ssize_t H, const TYPE *proj,           \
                              const TYPE *w_t, const TYPE *mask, TYPE *hs, TYPE *acts, TYPE *c_prev, \
                              TYPE *tcs) {                                                          \
        const Py_ssize_t G = 4 * H;                                                                 \
        TYPE h[MAX_H], c[MAX_H], z[4 * MAX_H];                                                      \
        for (Py_ssize_t b = 0; b < n; b++) {                                                        \
            for (Py_ssize_t u = 0; u < H; u++) h[u] = c[u] = 0;                                     \
            for (Py_ssize_t t = 0; t < T; t++) {                                                    \
                const Py_ssize_t bt = b * T + t;                                                    \
                memcpy(z, proj + bt * G, G * sizeof(TYPE));                                         \
                for (Py_ssize_t k = 0; k < H; k++) { /* z += h @ w_hh.T, one row of w_t a time */ \
                    const TYPE hk = h[k];                                                           \
                    const TYPE *row = w_t + k * G;                                                  \
                    for (Py_ssize_t j = 0; j < G; j++) z[j] += hk * row[j];                         \
                }                                                                                   \
                TYPE *a = acts + bt * G;                                                            \
                for (Py_ssize_t j = 0; j < 2 * H; j++) a[j] = sigmoid_##SUF(z[j]);                  \
                for (Py_ssize_t j = 2 * H; j < 3 * H; j++) a[j] = tanh_##SUF(z[j]);                 \
                for (Py_ssize_t j = 3 * H; j < G; j++) a[j] = sigmoid_##SUF(z[j]);                  \
                const TYPE m = mask[bt];                                                            \
                TYPE *cp = c_prev + bt * H, *tc = tcs + bt * H, *ho = hs + bt * H;                  \
                for (Py_ssize_t u = 0; u < H; u++) {                                                \
                    cp[u] = c[u];                                                                   \
                    const TYPE cn = a[H + u] * c[u] + a[u] * a[2 * H + u];                          \
                    tc[u] = tanh_##SUF(cn);                                                         \
                }                                                                                   \
                for (Py_ssize_t u = 0; u < H; u++) {                                                \
                    const TYPE cn = a[H + u] * c[u] + a[u] * a[2 * H + u];                          \
                    c[u] = m * cn + (1 - m) * c[u];                                                 \
                    h[u] = m * (a[3 * H + u] * tc[u]) + (1 - m) * h[u];                             \
                    ho[u] = h[u];                                                                   \
                }                                                                                   \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    static void backward_##SUF(Py_ssize_t n, Py_ssize_t T, Py_ssize_t H, const TYPE *w,             \
                               const TYPE *mask, const TYPE *acts, const TYPE *c_prev,              \
                               const TYPE *tcs, const TYPE *dhs, TYPE *dz_all) {                    \
        const Py_ssize_t G = 4 * H;                                                                 \
        TYPE dh[MAX_H], dc[MAX_H], nh[MAX_H];                                                       \
        for (Py_ssize_t b = 0; b < n; b++) {                                                        \
            for (Py_ssize_t u = 0; u < H; u++) dh[u] = dc[u] = 0;                                   \
            for (Py_ssize_t t = T - 1; t >= 0; t--) {                                               \
                const Py_ssize_t bt = b * T + t;                                                    \
                const TYPE m = mask[bt], keep = 1 - m;                                              \
                const TYPE *a = acts + bt * G, *cp = c_prev + bt * H, *tc = tcs + bt * H;           \
                const TYPE *dht = dhs + bt * H;                                                     \
                TYPE *dz = dz_all + bt * G;                                                         \
                for (Py_ssize_t u = 0; u < H; u++) {                                                \
                    const TYPE i = a[u], f = a[H + u], g = a[2 * H + u], o = a[3 * H + u];          \
                    const TYPE dhu = dh[u] + dht[u];                                                \
                    const TYPE dhn = m * dhu;                                                       \
                    const TYPE dcn = m * dc[u] + dhn * o * (1 - tc[u] * tc[u]);                     \
                    dz[u] = dcn * g * i * (1 - i);                                                  \
                    dz[H + u] = dcn * cp[u] * f * (1 - f);                                          \
                    dz[2 * H + u] = dcn * i * (1 - g * g);                                          \
                    dz[3 * H + u] = dhn * tc[u] * o * (1 - o);                                      \
                    dc[u] = dcn * f + keep * dc[u];                                                 \
                    nh[u] = keep * dhu;                                                             \
                }                                                                                   \
                for (Py_ssize_t j = 0; j < G; j++) { /* dh = dz @ w_hh + (1 - m) dh */            \
                    const TYPE dzj = dz[j];                                                         \
                    const TYPE *row = w + j * H;                                                    \
                    for (Py_ssize_t u = 0; u < H; u++) nh[u] += dzj * row[u];                       \
                }                                                                                   \
                memcpy(dh, nh, H * sizeof(TYPE));                                                   \
            }                                                                                       \
        }                                                                                           \
    }

DEFINE_LOOPS(float, f32)
DEFINE_LOOPS(double, f64)

/* float32 with H a multiple of 8: the same steps by hand on 8-lane vectors
 * (GCC/Clang vector extensions: AVX, or two SSE/NEON registers). A matvec
 * makes 32 outputs at a time from two interleaved partial sums (even and odd
 * terms), so eight independent FMA chains keep the pipeline full. */
#if defined(__GNUC__) && !defined(__clang__)
/* without AVX GCC notes that 32-byte vectors pass differently; these are all static inline */
#pragma GCC diagnostic ignored "-Wpsabi"
#endif
typedef float v8f __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

static inline v8f ld(const float *p) { v8f v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, v8f v) { memcpy(p, &v, sizeof v); }
static inline v8f bc(float x) { return (v8f){x, x, x, x, x, x, x, x}; }

/* a where the comparison's lane is true (all ones), else b */
static inline v8f pick(v8i when, v8f a, v8f b) { return (v8f)((when & (v8i)a) | (~when & (v8i)b)); }

static inline v8f exp_v8(v8f v) {
    v = pick(v < bc(-87.0f), bc(-87.0f), v);
    v = pick(v > bc(88.0f), bc(88.0f), v);
    const v8f magic = bc(12582912.0f); /* 1.5 * 2**23: adding it rounds to an integer */
    v8f k = (v * bc(1.44269504088896341f) + magic) - magic;
    v8f r = v - k * bc(0.693145751953125f);
    r = r - k * bc(1.428606765330187045e-06f);
    v8f p = bc(1.0f / 720.0f);
    p = p * r + bc(1.0f / 120.0f);
    p = p * r + bc(1.0f / 24.0f);
    p = p * r + bc(1.0f / 6.0f);
    p = p * r + bc(0.5f);
    p = p * r + bc(1.0f);
    p = p * r + bc(1.0f);
    v8i bits = (__builtin_convertvector(k, v8i) + 127) << 23;
    return p * (v8f)bits;
}
static inline v8f sigmoid_v8(v8f v) { return bc(1.0f) / (bc(1.0f) + exp_v8(-v)); }
static inline v8f tanh_v8(v8f v) { return bc(2.0f) / (bc(1.0f) + exp_v8(bc(-2.0f) * v)) - bc(1.0f); }

/* out[0:n_out] (+)= sum_k x[k] * m[k, 0:n_out], m row-major with n_out columns
 * (n_out a multiple of 8). */
static inline void matvec_v8(float *out, const float *x, const float *m, Py_ssize_t n_in, Py_ssize_t n_out,
                             int accumulate) {
    Py_ssize_t j = 0;
    for (; j + 32 <= n_out; j += 32) {
        v8f a0 = bc(0), a1 = bc(0), a2 = bc(0), a3 = bc(0), b0 = bc(0), b1 = bc(0), b2 = bc(0), b3 = bc(0);
        Py_ssize_t k = 0;
        for (; k + 2 <= n_in; k += 2) {
            const float *r = m + k * n_out + j, *s = r + n_out;
            const v8f xa = bc(x[k]), xb = bc(x[k + 1]);
            a0 += xa * ld(r), a1 += xa * ld(r + 8), a2 += xa * ld(r + 16), a3 += xa * ld(r + 24);
            b0 += xb * ld(s), b1 += xb * ld(s + 8), b2 += xb * ld(s + 16), b3 += xb * ld(s + 24);
        }
        if (k < n_in) {
            const float *r = m + k * n_out + j;
            const v8f xa = bc(x[k]);
            a0 += xa * ld(r), a1 += xa * ld(r + 8), a2 += xa * ld(r + 16), a3 += xa * ld(r + 24);
        }
        a0 += b0, a1 += b1, a2 += b2, a3 += b3;
        if (accumulate)
            a0 += ld(out + j), a1 += ld(out + j + 8), a2 += ld(out + j + 16), a3 += ld(out + j + 24);
        st(out + j, a0), st(out + j + 8, a1), st(out + j + 16, a2), st(out + j + 24, a3);
    }
    for (; j < n_out; j += 8) {
        v8f a = accumulate ? ld(out + j) : bc(0);
        for (Py_ssize_t k = 0; k < n_in; k++) a += bc(x[k]) * ld(m + k * n_out + j);
        st(out + j, a);
    }
}

static void forward_v8(Py_ssize_t n, Py_ssize_t T, Py_ssize_t H, const float *proj, const float *w_t,
                       const float *mask, float *hs, float *acts, float *c_prev, float *tcs) {
    const Py_ssize_t G = 4 * H;
    float h[MAX_H], c[MAX_H];
    for (Py_ssize_t b = 0; b < n; b++) {
        memset(h, 0, sizeof h), memset(c, 0, sizeof c);
        for (Py_ssize_t t = 0; t < T; t++) {
            const Py_ssize_t bt = b * T + t;
            float *a = acts + bt * G;
            memcpy(a, proj + bt * G, G * sizeof(float));
            matvec_v8(a, h, w_t, H, G, 1); /* z = proj + h @ w_hh.T */
            for (Py_ssize_t j = 0; j < 2 * H; j += 8) st(a + j, sigmoid_v8(ld(a + j)));
            for (Py_ssize_t j = 2 * H; j < 3 * H; j += 8) st(a + j, tanh_v8(ld(a + j)));
            for (Py_ssize_t j = 3 * H; j < G; j += 8) st(a + j, sigmoid_v8(ld(a + j)));
            const v8f m = bc(mask[bt]), keep = bc(1.0f - mask[bt]);
            float *cp = c_prev + bt * H, *tc = tcs + bt * H, *ho = hs + bt * H;
            for (Py_ssize_t u = 0; u < H; u += 8) {
                const v8f cu = ld(c + u), cn = ld(a + H + u) * cu + ld(a + u) * ld(a + 2 * H + u);
                const v8f tcv = tanh_v8(cn), hn = m * (ld(a + 3 * H + u) * tcv) + keep * ld(h + u);
                st(cp + u, cu), st(tc + u, tcv);
                st(c + u, m * cn + keep * cu), st(h + u, hn), st(ho + u, hn);
            }
        }
    }
}

static void backward_v8(Py_ssize_t n, Py_ssize_t T, Py_ssize_t H, const float *w, const float *mask,
                        const float *acts, const float *c_prev, const float *tcs, const float *dhs,
                        float *dz_all) {
    const Py_ssize_t G = 4 * H;
    float dh[MAX_H], dc[MAX_H], nh[MAX_H];
    const v8f one = bc(1.0f);
    for (Py_ssize_t b = 0; b < n; b++) {
        memset(dh, 0, sizeof dh), memset(dc, 0, sizeof dc);
        for (Py_ssize_t t = T - 1; t >= 0; t--) {
            const Py_ssize_t bt = b * T + t;
            const v8f m = bc(mask[bt]), keep = bc(1.0f - mask[bt]);
            const float *a = acts + bt * G, *cp = c_prev + bt * H, *tc = tcs + bt * H, *dht = dhs + bt * H;
            float *dz = dz_all + bt * G;
            for (Py_ssize_t u = 0; u < H; u += 8) {
                const v8f i = ld(a + u), f = ld(a + H + u), g = ld(a + 2 * H + u), o = ld(a + 3 * H + u);
                const v8f tcv = ld(tc + u), dhu = ld(dh + u) + ld(dht + u), dhn = m * dhu;
                const v8f dcn = m * ld(dc + u) + dhn * o * (one - tcv * tcv);
                st(dz + u, dcn * g * i * (one - i));
                st(dz + H + u, dcn * ld(cp + u) * f * (one - f));
                st(dz + 2 * H + u, dcn * i * (one - g * g));
                st(dz + 3 * H + u, dhn * tcv * o * (one - o));
                st(dc + u, dcn * f + keep * ld(dc + u));
                st(nh + u, keep * dhu);
            }
            matvec_v8(nh, dz, w, G, H, 1); /* dh = dz @ w_hh + (1 - m) dh */
            memcpy(dh, nh, H * sizeof(float));
        }
    }
}

static int check(Py_buffer *buf, Py_ssize_t count, Py_ssize_t item, const char *name) {
    if (buf->len != count * item) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, buf->len, count * item);
        return -1;
    }
    return 0;
}

/* forward(n, T, H, itemsize, proj, w_t, mask, hs, acts, c_prev, tcs) */
static PyObject *py_forward(PyObject *self, PyObject *args) {
    Py_ssize_t n, T, H, item;
    Py_buffer proj, w_t, mask, hs, acts, cp, tcs;
    if (!PyArg_ParseTuple(args, "nnnny*y*y*w*w*w*w*:forward", &n, &T, &H, &item, &proj, &w_t, &mask, &hs,
                          &acts, &cp, &tcs))
        return NULL;
    PyObject *result = NULL;
    if (H < 1 || H > MAX_H || (item != 4 && item != 8)) {
        PyErr_SetString(PyExc_ValueError, "hidden size or item size out of range");
        goto done;
    }
    if (check(&proj, n * T * 4 * H, item, "proj") || check(&w_t, 4 * H * H, item, "w_t") ||
        check(&mask, n * T, item, "mask") || check(&hs, n * T * H, item, "hs") ||
        check(&acts, n * T * 4 * H, item, "acts") || check(&cp, n * T * H, item, "c_prev") ||
        check(&tcs, n * T * H, item, "tcs"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    if (item == 4 && H % 8 == 0)
        forward_v8(n, T, H, proj.buf, w_t.buf, mask.buf, hs.buf, acts.buf, cp.buf, tcs.buf);
    else if (item == 4)
        forward_f32(n, T, H, proj.buf, w_t.buf, mask.buf, hs.buf, acts.buf, cp.buf, tcs.buf);
    else
        forward_f64(n, T, H, proj.buf, w_t.buf, mask.buf, hs.buf, acts.buf, cp.buf, tcs.buf);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&proj), PyBuffer_Release(&w_t), PyBuffer_Release(&mask), PyBuffer_Release(&hs);
    PyBuffer_Release(&acts), PyBuffer_Release(&cp), PyBuffer_Release(&tcs);
    return result;
}

/* backward(n, T, H, itemsize, w, mask, acts, c_prev, tcs, dhs, dz) */
static PyObject *py_backward(PyObject *self, PyObject *args) {
    Py_ssize_t n, T, H, item;
    Py_buffer w, mask, acts, cp, tcs, dhs, dz;
    if (!PyArg_ParseTuple(args, "nnnny*y*y*y*y*y*w*:backward", &n, &T, &H, &item, &w, &mask, &acts, &cp,
                          &tcs, &dhs, &dz))
        return NULL;
    PyObject *result = NULL;
    if (H < 1 || H > MAX_H || (item != 4 && item != 8)) {
        PyErr_SetString(PyExc_ValueError, "hidden size or item size out of range");
        goto done;
    }
    if (check(&w, 4 * H * H, item, "w") || check(&mask, n * T, item, "mask") ||
        check(&acts, n * T * 4 * H, item, "acts") || check(&cp, n * T * H, item, "c_prev") ||
        check(&tcs, n * T * H, item, "tcs") || check(&dhs, n * T * H, item, "dhs") ||
        check(&dz, n * T * 4 * H, item, "dz"))
        goto done;
    Py_BEGIN_ALLOW_THREADS
    if (item == 4 && H % 8 == 0)
        backward_v8(n, T, H, w.buf, mask.buf, acts.buf, cp.buf, tcs.buf, dhs.buf, dz.buf);
    else if (item == 4)
        backward_f32(n, T, H, w.buf, mask.buf, acts.buf, cp.buf, tcs.buf, dhs.buf, dz.buf);
    else
        backward_f64(n, T, H, w.buf, mask.buf, acts.buf, cp.buf, tcs.buf, dhs.buf, dz.buf);
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&w), PyBuffer_Release(&mask), PyBuffer_Release(&acts), PyBuffer_Release(&cp);
    PyBuffer_Release(&tcs), PyBuffer_Release(&dhs), PyBuffer_Release(&dz);
    return result;
}

static PyMethodDef methods[] = {
    {"forward", py_forward, METH_VARARGS, "one LSTM layer forward over a batch, keeping the BPTT cache"},
    {"backward", py_backward, METH_VARARGS, "the gate gradients dz of one layer at every step"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_bptt", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__bptt(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && PyModule_AddIntConstant(m, "MAX_H", MAX_H) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
