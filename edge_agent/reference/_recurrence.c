/* The integer LSTM's time loop (docs/arithmetic.md), in C.
 *
 * One call runs one layer over every timestep of a batch of windows. Windows go
 * through it GROUP at a time: one window's step is a chain of dependent work
 * (matvec, requantize, look up, update the cell, feed h back), so stepping a
 * few independent windows together lets the CPU overlap their chains, and each
 * weight loaded serves all of them. The layout and every operand are prepared
 * by edge_agent/recurrence.py; this file only computes, in the board's 32-bit
 * integer arithmetic:
 *
 *   - the int8 x int8 matmuls, by one of three kernels that give equal sums:
 *     int32 lanes; float32 lanes where every partial sum is provably below 2**24
 *     (exact in any order); or AVX-512 VNNI dot products of (x + 128) as u8 with
 *     the s8 weights, minus 128 * sum(w) per row (exact modulo 2**32, and the
 *     true sum fits int32, so exact);
 *   - requantization products wrap modulo 2**32 only after a per-row range
 *     check has proven they fit int32 (a value outside stops the run with a
 *     code; see requantize());
 *   - gates and cell are int32 throughout, as in device/cell.py.
 *
 * The portable matvecs use GCC/Clang vector extensions, so the same source
 * builds for AVX-512, AVX2, SSE2 or NEON; they are blocked by hand because their
 * accumulators must stay in registers. With AVX-512 the gate and cell passes
 * are intrinsics (table lookups by gather); elsewhere they are plain loops the
 * compiler vectorizes. tests/test_recurrence.py builds this file four ways and
 * holds every build and kernel equal.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__AVX512VNNI__) && defined(__AVX512BW__)
#define HAS_VNNI 1
#else
#define HAS_VNNI 0
#endif

#if defined(__AVX512F__)
#define VBYTES 64
#define ACCS 16 /* accumulator vectors a matvec pass keeps in registers */
#elif defined(__AVX__)
#define VBYTES 32
#define ACCS 8
#else
#define VBYTES 16
#define ACCS 8
#endif
#define LANES (VBYTES / 4)
#define GROUP 4 /* windows stepped together */

typedef float vf __attribute__((vector_size(VBYTES)));
typedef int32_t vi __attribute__((vector_size(VBYTES)));

enum { OK = 0, INPUT_OVERFLOW = 1, RECURRENT_OVERFLOW = 2 };
enum { KERNEL_INT32 = 0, KERNEL_FLOAT32 = 1, KERNEL_VNNI = 2 };

/* Rows of the per-row operand table P [N_PARAMS, R], made by recurrence.py: for
 * the input (X) and recurrent (H) accumulator of each gate row, the multiplier,
 * the constant added to acc * multiplier, the shift, and the accumulator range
 * proven safe (as base and span); then the row's gate table offset. */
enum { P_MX, P_KX, P_SX, P_BASEX, P_SPANX, P_MH, P_KH, P_SH, P_BASEH, P_SPANH, P_OFF, N_PARAMS };

enum { GATE_FRAC = 12, OUT_FRAC = 15, H_FRAC = 7, TABLE = 65536 };

#define INLINE static inline __attribute__((always_inline))

INLINE int32_t clamp32(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* ---- matvec kernels ------------------------------------------------------------
 * out[k, r] = sum_j x[k, j] * w[j, r] for g windows k and rows r, nb vectors of
 * rows per pass; g and nb are constants after inlining, so the g * nb
 * accumulators stay in registers for the whole j loop and every weight vector
 * loaded is used g times. */

#define DEFINE_MATVEC(name, T, V)                                                          \
    INLINE void name##_pass(const T *w, Py_ssize_t R, const T *x, Py_ssize_t xs, int n,  \
                            T *out, Py_ssize_t os, int g, int nb) {                      \
        V acc[ACCS];                                                                     \
        for (int i = 0; i < g * nb; i++) acc[i] = (V){0};                                \
        for (int j = 0; j < n; j++) {                                                    \
            V wv[ACCS];                                                                  \
            for (int v = 0; v < nb; v++) memcpy(&wv[v], w + j * R + v * LANES, sizeof(V)); \
            for (int k = 0; k < g; k++) {                                                \
                const T xk = x[k * xs + j];                                              \
                for (int v = 0; v < nb; v++) acc[k * nb + v] += wv[v] * xk;              \
            }                                                                            \
        }                                                                                \
        for (int k = 0; k < g; k++)                                                      \
            for (int v = 0; v < nb; v++)                                                 \
                memcpy(out + k * os + v * LANES, &acc[k * nb + v], sizeof(V));           \
    }                                                                                    \
    INLINE void name##_rows(const T *w, Py_ssize_t R, const T *x, Py_ssize_t xs, int n,  \
                            T *out, Py_ssize_t os, int g) {                              \
        const int nb = ACCS / g;                                                         \
        Py_ssize_t r = 0;                                                                \
        for (; r + nb * LANES <= R; r += nb * LANES)                                     \
            name##_pass(w + r, R, x, xs, n, out + r, os, g, nb);                         \
        for (; r < R; r += LANES) name##_pass(w + r, R, x, xs, n, out + r, os, g, 1);    \
    }                                                                                    \
    static void name(const T *w, Py_ssize_t R, const T *x, Py_ssize_t xs, int n, T *out, \
                     Py_ssize_t os, int g) {                                             \
        if (g == GROUP)                                                                  \
            name##_rows(w, R, x, xs, n, out, os, GROUP);                                 \
        else                                                                             \
            for (int k = 0; k < g; k++) name##_rows(w, R, x + k * xs, xs, n, out + k * os, os, 1); \
    }

DEFINE_MATVEC(matvec_f32, float, vf)
DEFINE_MATVEC(matvec_i32, int32_t, vi)

#if HAS_VNNI
/* w: [q][R][4] int8 (four consecutive inputs of a row side by side); x: u8,
 * four inputs per dword, broadcast to every row lane. */
INLINE void vnni_pass(const int8_t *w, Py_ssize_t R, const uint8_t *x, Py_ssize_t xs, int quads,
                      int32_t *out, Py_ssize_t os, int g, int nb) {
    __m512i acc[16];
    for (int i = 0; i < g * nb; i++) acc[i] = _mm512_setzero_si512();
    for (int q = 0; q < quads; q++) {
        __m512i wv[16];
        for (int v = 0; v < nb; v++) wv[v] = _mm512_loadu_si512(w + ((size_t)q * R + v * 16) * 4);
        for (int k = 0; k < g; k++) {
            int32_t four;
            memcpy(&four, x + k * xs + 4 * q, 4);
            const __m512i xb = _mm512_set1_epi32(four);
            for (int v = 0; v < nb; v++) acc[k * nb + v] = _mm512_dpbusd_epi32(acc[k * nb + v], xb, wv[v]);
        }
    }
    for (int k = 0; k < g; k++)
        for (int v = 0; v < nb; v++) _mm512_storeu_si512(out + k * os + v * 16, acc[k * nb + v]);
}

INLINE void vnni_rows(const int8_t *w, Py_ssize_t R, const uint8_t *x, Py_ssize_t xs, int quads,
                      int32_t *out, Py_ssize_t os, int g) {
    const int nb = 16 / g;
    Py_ssize_t r = 0;
    for (; r + nb * 16 <= R; r += nb * 16) vnni_pass(w + r * 4, R, x, xs, quads, out + r, os, g, nb);
    for (; r < R; r += 16) vnni_pass(w + r * 4, R, x, xs, quads, out + r, os, g, 1);
}

static void matvec_vnni(const int8_t *w, Py_ssize_t R, const uint8_t *x, Py_ssize_t xs, int quads,
                        int32_t *out, Py_ssize_t os, int g) {
    if (g == GROUP)
        vnni_rows(w, R, x, xs, quads, out, os, GROUP);
    else
        for (int k = 0; k < g; k++) vnni_rows(w, R, x + k * xs, xs, quads, out + k * os, os, 1);
}
#endif

typedef struct {
    Py_ssize_t n, steps, n_in, hidden, rows; /* rows: 4*hidden padded to a multiple of 16 */
    int c_frac, kernel;
    const int8_t *seq;      /* [n, steps, n_in] */
    const int64_t *lengths; /* [n] */
    int32_t *h, *c;         /* [n, hidden] in: initial state, out: final state */
    const void *w;          /* int32/float32 [n_in + hidden, rows], or VNNI int8 [quads][rows][4] */
    const int32_t *p;       /* [N_PARAMS, rows] */
    const int16_t *lut;     /* [2 * TABLE + 2]: sigmoid then tanh at every Q3.12 input, spare entries */
    int8_t *hs;             /* [n, steps, hidden] */
    int32_t *trace_gates;   /* [n, steps, 4*hidden] or NULL */
    int32_t *trace_cell;    /* [n, steps, hidden] or NULL */
} Layer;

static Py_ssize_t quads(Py_ssize_t n) { return (n + 3) / 4; }

#if !defined(__AVX512F__)
/* out[i] = table[off[i] + z[i]] (off may be NULL: 0) */
static void lookup(const int16_t *restrict table, const int32_t *restrict off,
                   const int32_t *restrict z, int32_t *restrict out, Py_ssize_t n) {
    for (Py_ssize_t i = 0; i < n; i++) out[i] = table[(off ? off[i] : 0) + z[i]];
}

/* Requantize both accumulators of every gate row into Q3.12 pre-activations z.
 * Returns OK or the overflow code.
 *
 * Everything is computed modulo 2**32 and is exact: the kernel's sum ax differs
 * from the true accumulator a by a per-row constant c (the VNNI offset, else 0),
 * and (a + bias) * m + half = ax * m + K with K = (bias - c) * m + half (mod 2**32).
 * The range check comes first and proves the true value fits int32, so its
 * 32-bit image is that value: a is in [lo, hi] exactly when
 * (uint32)(ax - (c + lo)) <= (uint32)(hi - lo), one compare per row. */
static int requantize(const Layer *L, const int32_t *restrict ax, const int32_t *restrict ah,
                      int32_t *restrict z) {
    const uint32_t *restrict p = (const uint32_t *)L->p;
    const Py_ssize_t R = L->rows, rows = 4 * L->hidden;
    uint32_t bad_x = 0, bad_h = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        const uint32_t a = (uint32_t)ax[r], b = (uint32_t)ah[r];
        bad_x |= a - p[P_BASEX * R + r] > p[P_SPANX * R + r];
        bad_h |= b - p[P_BASEH * R + r] > p[P_SPANH * R + r];
        const int32_t px = (int32_t)(a * p[P_MX * R + r] + p[P_KX * R + r]);
        const int32_t ph = (int32_t)(b * p[P_MH * R + r] + p[P_KH * R + r]);
        /* shifts are >= 1, so each term is below 2**30 and the sum cannot wrap */
        z[r] = clamp32((ph >> (int32_t)p[P_SH * R + r]) + (px >> (int32_t)p[P_SX * R + r]), -32768, 32767);
    }
    if (bad_x) return INPUT_OVERFLOW;
    if (bad_h) return RECURRENT_OVERFLOW;
    return OK;
}
#endif

/* For g windows: z = the requantized gate pre-activations, act = their table
 * values. With AVX-512 one pass does both, each row's operands loaded once for
 * all g windows; padding rows are harmless (zero multipliers, never flagged). */
static int gates(const Layer *L, int g, const int32_t *ax, const int32_t *ah, int32_t *z, int32_t *act) {
    const Py_ssize_t R = L->rows;
#if defined(__AVX512F__)
    const uint32_t *p = (const uint32_t *)L->p;
    const __m512i lo = _mm512_set1_epi32(-32768), hi = _mm512_set1_epi32(32767);
    __mmask16 bad_x = 0, bad_h = 0;
    for (Py_ssize_t r = 0; r < R; r += 16) {
#define ROW(which) _mm512_loadu_si512(p + (which) * R + r)
        const __m512i mx = ROW(P_MX), kx = ROW(P_KX), sx = ROW(P_SX), base_x = ROW(P_BASEX), span_x = ROW(P_SPANX);
        const __m512i mh = ROW(P_MH), kh = ROW(P_KH), sh = ROW(P_SH), base_h = ROW(P_BASEH), span_h = ROW(P_SPANH);
        const __m512i off = ROW(P_OFF);
#undef ROW
        for (int k = 0; k < g; k++) {
            const __m512i a = _mm512_loadu_si512(ax + k * R + r), b = _mm512_loadu_si512(ah + k * R + r);
            bad_x |= _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(a, base_x), span_x);
            bad_h |= _mm512_cmpgt_epu32_mask(_mm512_sub_epi32(b, base_h), span_h);
            const __m512i px = _mm512_add_epi32(_mm512_mullo_epi32(a, mx), kx);
            const __m512i ph = _mm512_add_epi32(_mm512_mullo_epi32(b, mh), kh);
            __m512i zz = _mm512_add_epi32(_mm512_srav_epi32(ph, sh), _mm512_srav_epi32(px, sx));
            zz = _mm512_min_epi32(_mm512_max_epi32(zz, lo), hi);
            _mm512_storeu_si512(z + k * R + r, zz);
            /* dword gathers read each int16 entry with the next; keep the low half */
            const __m512i pair = _mm512_i32gather_epi32(_mm512_add_epi32(zz, off), (const void *)L->lut, 2);
            _mm512_storeu_si512(act + k * R + r, _mm512_srai_epi32(_mm512_slli_epi32(pair, 16), 16));
        }
    }
    if (bad_x) return INPUT_OVERFLOW;
    if (bad_h) return RECURRENT_OVERFLOW;
    return OK;
#else
    for (int k = 0; k < g; k++) {
        int code = requantize(L, ax + k * R, ah + k * R, z + k * R);
        if (code != OK) return code;
    }
    for (int k = 0; k < g; k++) lookup(L->lut, L->p + P_OFF * R, z + k * R, act + k * R, 4 * L->hidden);
    return OK;
#endif
}

/* The matmul inputs of up to GROUP windows, in the kernel's type: x then h per window. */
typedef struct {
    Py_ssize_t stride, h_at; /* per window; where h starts */
    float *f;
    int32_t *i;
    uint8_t *u; /* value + 128 */
} Inputs;

/* in[at : at + n] = v, in the kernel's type (one loop per type, so each vectorizes) */
#define DEFINE_FEED(name, T)                                                               \
    static void name(const Inputs *in, int kernel, Py_ssize_t at, const T *restrict v,    \
                     Py_ssize_t n) {                                                      \
        if (kernel == KERNEL_FLOAT32) {                                                   \
            float *restrict f = in->f + at;                                               \
            for (Py_ssize_t i = 0; i < n; i++) f[i] = (float)v[i];                        \
        } else if (kernel == KERNEL_INT32) {                                              \
            int32_t *restrict d = in->i + at;                                             \
            for (Py_ssize_t i = 0; i < n; i++) d[i] = v[i];                               \
        } else {                                                                          \
            uint8_t *restrict u = in->u + at;                                             \
            for (Py_ssize_t i = 0; i < n; i++) u[i] = (uint8_t)(v[i] + 128);              \
        }                                                                                 \
    }

DEFINE_FEED(feed_i8, int8_t)
DEFINE_FEED(feed_i32, int32_t)

/* The cell's fixed-point constants, from c's scale (docs/arithmetic.md). */
typedef struct {
    int i_shift, up, down, h_shift;
    int32_t i_round, down_round, h_round;
    const int16_t *tanh; /* tanh table, indexed by a Q3.12 value in [-32768, 32767] */
} CellConsts;

/* h_frac: h's fraction bits, 7 (int8) or 15 (int16) */
static CellConsts cell_consts(int c_frac, int h_frac, const int16_t *lut) {
    CellConsts k;
    k.i_shift = 2 * OUT_FRAC - c_frac; /* i * g (Q0.30) -> c's scale */
    k.i_round = (int32_t)1 << (k.i_shift - 1);
    k.up = c_frac < GATE_FRAC ? GATE_FRAC - c_frac : 0; /* c -> Q3.12: shift up, */
    k.down = c_frac > GATE_FRAC ? c_frac - GATE_FRAC : 0; /* or round down */
    k.down_round = ((int32_t)1 << k.down) >> 1;
    k.h_shift = 2 * OUT_FRAC - h_frac; /* o * tanh(c) (Q0.30) -> h (Q0.7 or Q0.15) */
    k.h_round = (int32_t)1 << (k.h_shift - 1);
    k.tanh = lut + TABLE + 32768;
    return k;
}

/* One window's step from its gate activations act (i, f, g, o blocks of H):
 * c and h updated in place, h also into the next matmul input at `at`.
 * tmp: room for 3 * H int32 (the portable path only). */
static void update_cell(const CellConsts *K, Py_ssize_t H, const int32_t *act, int32_t *c, int32_t *h,
                        const Inputs *in, int kernel, Py_ssize_t at, int32_t *tmp) {
    const int32_t *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
#if defined(__AVX512F__)
    (void)tmp;
    const __m512i half15 = _mm512_set1_epi32(1 << (OUT_FRAC - 1)), i_round = _mm512_set1_epi32(K->i_round);
    const __m512i down_round = _mm512_set1_epi32(K->down_round), h_round = _mm512_set1_epi32(K->h_round);
    const __m128i i_shift = _mm_cvtsi32_si128(K->i_shift), up = _mm_cvtsi32_si128(K->up);
    const __m128i down = _mm_cvtsi32_si128(K->down), h_shift = _mm_cvtsi32_si128(K->h_shift);
    const __m512i lo16 = _mm512_set1_epi32(-32768), hi16 = _mm512_set1_epi32(32767);
    const __m512i lo8 = _mm512_set1_epi32(-128), hi8 = _mm512_set1_epi32(127), u8 = _mm512_set1_epi32(128);
    for (Py_ssize_t u = 0; u < H; u += 16) {
        const __mmask16 m = H - u >= 16 ? 0xFFFF : (__mmask16)((1u << (H - u)) - 1);
#define LOAD(ptr) _mm512_maskz_loadu_epi32(m, (ptr) + u)
        const __m512i i = LOAD(gi), f = LOAD(gf), g = LOAD(gg), o = LOAD(go), cv = LOAD(c);
#undef LOAD
        __m512i cn = _mm512_add_epi32(_mm512_srai_epi32(_mm512_add_epi32(_mm512_mullo_epi32(f, cv), half15), OUT_FRAC),
                                      _mm512_sra_epi32(_mm512_add_epi32(_mm512_mullo_epi32(i, g), i_round), i_shift));
        cn = _mm512_min_epi32(_mm512_max_epi32(cn, lo16), hi16);
        __m512i idx = _mm512_sra_epi32(_mm512_add_epi32(_mm512_sll_epi32(cn, up), down_round), down);
        idx = _mm512_min_epi32(_mm512_max_epi32(idx, lo16), hi16);
        __m512i tc = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), m, idx, (const void *)K->tanh, 2);
        tc = _mm512_srai_epi32(_mm512_slli_epi32(tc, 16), 16);
        __m512i hn = _mm512_sra_epi32(_mm512_add_epi32(_mm512_mullo_epi32(o, tc), h_round), h_shift);
        hn = _mm512_min_epi32(_mm512_max_epi32(hn, lo8), hi8);
        _mm512_mask_storeu_epi32(c + u, m, cn);
        _mm512_mask_storeu_epi32(h + u, m, hn);
        if (kernel == KERNEL_VNNI)
            _mm512_mask_cvtepi32_storeu_epi8(in->u + at + u, m, _mm512_add_epi32(hn, u8));
        else if (kernel == KERNEL_FLOAT32)
            _mm512_mask_storeu_ps(in->f + at + u, m, _mm512_cvtepi32_ps(hn));
        else
            _mm512_mask_storeu_epi32(in->i + at + u, m, hn);
    }
#else
    int32_t *cn = tmp, *idx = tmp + H, *tc = tmp + 2 * H;
    for (Py_ssize_t u = 0; u < H; u++) {
        int32_t v = ((gf[u] * c[u] + (1 << (OUT_FRAC - 1))) >> OUT_FRAC) + ((gi[u] * gg[u] + K->i_round) >> K->i_shift);
        cn[u] = clamp32(v, -32768, 32767);
        idx[u] = clamp32((cn[u] * (1 << K->up) + K->down_round) >> K->down, -32768, 32767);
    }
    lookup(K->tanh, NULL, idx, tc, H);
    for (Py_ssize_t u = 0; u < H; u++) {
        c[u] = cn[u];
        h[u] = clamp32((go[u] * tc[u] + K->h_round) >> K->h_shift, -128, 127);
    }
    feed_i32(in, kernel, at, h, H);
#endif
}

static int run(const Layer *L) {
    const Py_ssize_t H = L->hidden, R = L->rows, rows = 4 * H, C = L->n_in, T = L->steps;
    const int kernel = L->kernel;
    const CellConsts K = cell_consts(L->c_frac, H_FRAC, L->lut);
    int code = OK;

    /* one allocation per call, none per step */
    Inputs in;
    const Py_ssize_t qx = quads(C), qh = quads(H);
    in.stride = kernel == KERNEL_VNNI ? 4 * (qx + qh) : C + H;
    in.h_at = kernel == KERNEL_VNNI ? 4 * qx : C;
    size_t words = (size_t)GROUP * (size_t)(3 * in.stride + 5 * R) + 3 * (size_t)H;
    uint32_t *scratch = calloc(words, 4);
    if (!scratch) return -1;
    in.f = (float *)scratch;
    in.i = (int32_t *)(scratch + GROUP * in.stride);
    in.u = (uint8_t *)(scratch + 2 * GROUP * in.stride);
    float *fx = (float *)(scratch + 3 * GROUP * in.stride), *fh = fx + GROUP * R;
    int32_t *ax = (int32_t *)(fh + GROUP * R), *ah = ax + GROUP * R, *z = ah + GROUP * R;
    int32_t *tmp = z + GROUP * R;
    memset(in.u, 128, (size_t)GROUP * in.stride); /* VNNI padding: zero weights, any value */

    for (Py_ssize_t b0 = 0; b0 < L->n && code == OK; b0 += GROUP) {
        const int g = L->n - b0 < GROUP ? (int)(L->n - b0) : GROUP;
        int32_t *h = L->h + b0 * H, *c = L->c + b0 * H; /* g windows' state, contiguous */
        for (int k = 0; k < g; k++) feed_i32(&in, kernel, k * in.stride + in.h_at, h + k * H, H);
        for (Py_ssize_t t = 0; t < T; t++) {
            for (int k = 0; k < g; k++) feed_i8(&in, kernel, k * in.stride, L->seq + ((b0 + k) * T + t) * C, C);
            if (kernel == KERNEL_FLOAT32) {
                const float *w = L->w;
                matvec_f32(w, R, in.f, in.stride, (int)C, fx, R, g);
                matvec_f32(w + C * R, R, in.f + C, in.stride, (int)H, fh, R, g);
                for (Py_ssize_t i = 0; i < g * R; i++) { /* exact: integers below 2**24 */
                    ax[i] = (int32_t)fx[i];
                    ah[i] = (int32_t)fh[i];
                }
            } else if (kernel == KERNEL_INT32) {
                const int32_t *w = L->w;
                matvec_i32(w, R, in.i, in.stride, (int)C, ax, R, g);
                matvec_i32(w + C * R, R, in.i + C, in.stride, (int)H, ah, R, g);
            }
#if HAS_VNNI
            else {
                const int8_t *w = L->w;
                matvec_vnni(w, R, in.u, in.stride, (int)qx, ax, R, g);
                matvec_vnni(w + qx * R * 4, R, in.u + in.h_at, in.stride, (int)qh, ah, R, g);
            }
#endif
            int32_t *act = ax; /* each accumulator is spent as its activation is written */
            code = gates(L, g, ax, ah, z, act);
            if (code != OK) break;
            for (int k = 0; k < g; k++) {
                const Py_ssize_t b = b0 + k;
                if (t < L->lengths[b]) /* past its length a window's state stays frozen */
                    update_cell(&K, H, act + k * R, c + k * H, h + k * H, &in, kernel, k * in.stride + in.h_at, tmp);
                int8_t *hs = L->hs + (b * T + t) * H;
                for (Py_ssize_t u = 0; u < H; u++) hs[u] = (int8_t)h[k * H + u];
                if (L->trace_gates) {
                    memcpy(L->trace_gates + (b * T + t) * rows, z + k * R, (size_t)rows * 4);
                    memcpy(L->trace_cell + (b * T + t) * H, c + k * H, (size_t)H * 4);
                }
            }
        }
    }
    free(scratch);
    return code;
}

/* ---- the 16-bit state (docs/arithmetic.md, "16-bit hidden state") -------------
 * A plain scalar loop, one window at a time: int16 inputs and state (layer 0's
 * int8 inputs arrive widened), int8 weights, int32 sums (edge_agent/recurrence.py
 * has checked that every partial sum stays inside int32), and each accumulator's
 * pre-shift and requantization in int64, checked against int32 as the board
 * computes them in one 32-bit register. The 8-bit kernels above are untouched. */

/* rows of the per-row table [N_WIDE, 4H] (int64), as recurrence.WideLayerKernel fills it */
enum { W_BX, W_PX, W_MX, W_SX, W_PH, W_MH, W_SH, W_OFF, N_WIDE };

typedef struct {
    Py_ssize_t n, steps, n_in, hidden;
    int c_frac;
    const int16_t *seq;     /* [n, steps, n_in] */
    const int64_t *lengths; /* [n] */
    int32_t *h, *c;         /* [n, hidden] in: initial state, out: final state */
    const int32_t *w;       /* [n_in + hidden, 4 * hidden]: the weights transposed */
    const int64_t *p;       /* [N_WIDE, 4 * hidden] */
    const int16_t *lut;     /* as Layer's */
    int16_t *hs;            /* [n, steps, hidden] */
    int32_t *trace_gates;   /* [n, steps, 4 * hidden] or NULL */
    int32_t *trace_cell;    /* [n, steps, hidden] or NULL */
} WideLayer;

/* requant(pre_shift(acc + bias, pre), m, s) into *out; 0 if the sum plus the pre-shift's
 * half, or the product plus the rounding half, leaves int32 */
static int rescale_wide(int64_t acc, int64_t bias, int64_t pre, int64_t m, int64_t s, int32_t *out) {
    int64_t v = acc + bias + (((int64_t)1 << pre) >> 1);
    if (v > INT32_MAX || v < -INT32_MAX) return 0;
    v >>= pre;
    const int64_t prod = v * m + ((int64_t)1 << (s - 1));
    if (prod > INT32_MAX || prod < -INT32_MAX) return 0;
    *out = (int32_t)(prod >> s);
    return 1;
}

/* acc[r] = sum_j x[j] * w[j, r] over n inputs, rows r < R (the compiler vectorizes the r loop) */
static void matvec_wide(const int32_t *restrict w, Py_ssize_t R, const int32_t *restrict x, Py_ssize_t n,
                        int32_t *restrict acc) {
    for (Py_ssize_t r = 0; r < R; r++) acc[r] = 0;
    for (Py_ssize_t j = 0; j < n; j++) {
        const int32_t xj = x[j];
        const int32_t *restrict row = w + j * R;
        for (Py_ssize_t r = 0; r < R; r++) acc[r] += row[r] * xj;
    }
}

static int run_wide(const WideLayer *L) {
    const Py_ssize_t H = L->hidden, R = 4 * H, C = L->n_in, T = L->steps;
    const CellConsts K = cell_consts(L->c_frac, OUT_FRAC, L->lut);
    const int64_t *p = L->p;
    int32_t *scratch = calloc((size_t)(C + 4 * R), 4);
    if (!scratch) return -1;
    int32_t *x = scratch, *ax = x + C, *ah = ax + R, *z = ah + R, *act = z + R;
    int code = OK;
    for (Py_ssize_t b = 0; b < L->n && code == OK; b++) {
        int32_t *h = L->h + b * H, *c = L->c + b * H;
        for (Py_ssize_t t = 0; t < T && code == OK; t++) {
            if (t < L->lengths[b]) { /* past its length a window's state stays frozen */
                const int16_t *xt = L->seq + (b * T + t) * C;
                for (Py_ssize_t j = 0; j < C; j++) x[j] = xt[j];
                matvec_wide(L->w, R, x, C, ax);
                matvec_wide(L->w + C * R, R, h, H, ah); /* from the previous step's h */
                for (Py_ssize_t r = 0; r < R && code == OK; r++) {
                    int32_t zx, zh;
                    if (!rescale_wide(ax[r], p[W_BX * R + r], p[W_PX * R + r], p[W_MX * R + r], p[W_SX * R + r], &zx))
                        code = INPUT_OVERFLOW;
                    else if (!rescale_wide(ah[r], 0, p[W_PH * R + r], p[W_MH * R + r], p[W_SH * R + r], &zh))
                        code = RECURRENT_OVERFLOW;
                    else { /* each term is below 2**30: the sum cannot wrap */
                        z[r] = clamp32(zx + zh, -32768, 32767);
                        act[r] = L->lut[p[W_OFF * R + r] + z[r]];
                    }
                }
                if (code != OK) break;
                const int32_t *gi = act, *gf = act + H, *gg = act + 2 * H, *go = act + 3 * H;
                for (Py_ssize_t u = 0; u < H; u++) {
                    const int32_t v = ((gf[u] * c[u] + (1 << (OUT_FRAC - 1))) >> OUT_FRAC)
                                      + ((gi[u] * gg[u] + K.i_round) >> K.i_shift);
                    c[u] = clamp32(v, -32768, 32767);
                    const int32_t idx = clamp32((c[u] * (1 << K.up) + K.down_round) >> K.down, -32768, 32767);
                    h[u] = clamp32((go[u] * K.tanh[idx] + K.h_round) >> K.h_shift, -32768, 32767);
                }
                if (L->trace_gates) {
                    memcpy(L->trace_gates + (b * T + t) * R, z, (size_t)R * 4);
                    memcpy(L->trace_cell + (b * T + t) * H, c, (size_t)H * 4);
                }
            }
            int16_t *hs = L->hs + (b * T + t) * H;
            for (Py_ssize_t u = 0; u < H; u++) hs[u] = (int16_t)h[u];
        }
    }
    free(scratch);
    return code;
}

/* ---- Python binding: buffers in, sizes checked, the GIL released while it runs ---- */

static int expect(Py_buffer *buf, Py_ssize_t bytes, const char *name) {
    if (buf->len != bytes) {
        PyErr_Format(PyExc_ValueError, "run_layer: %s has %zd bytes, expected %zd", name, buf->len, bytes);
        return 0;
    }
    return 1;
}

/* a * b * c into *out; 0 if a factor is negative or the product overflows */
static int size3(Py_ssize_t a, Py_ssize_t b, Py_ssize_t c, Py_ssize_t *out) {
    Py_ssize_t ab;
    return a >= 0 && b >= 0 && c >= 0 && !__builtin_mul_overflow(a, b, &ab) && !__builtin_mul_overflow(ab, c, out);
}

/* the buffer's start suits its element type (the loop dereferences it directly) */
static int aligned(Py_buffer *buf, size_t to, const char *name) {
    if ((uintptr_t)buf->buf % to) {
        PyErr_Format(PyExc_ValueError, "run_layer: %s is not aligned to %zu bytes", name, to);
        return 0;
    }
    return 1;
}

/* What the loop relies on to stay in bounds and defined: shifts in 1..31 and
 * table offsets that keep every clamped z inside the table, for every one of the
 * R rows (padding rows included: the kernels compute them too). */
static int params_ok(const int32_t *p, Py_ssize_t R, Py_ssize_t rows) {
    for (Py_ssize_t r = 0; r < rows; r++) {
        int32_t sx = p[P_SX * R + r], sh = p[P_SH * R + r], off = p[P_OFF * R + r];
        if (sx < 1 || sx > 31 || sh < 1 || sh > 31 || off < 32768 || off > TABLE + 32768) return 0;
    }
    return 1;
}

/* The buffers both entry points borrow from Python, bound and released together. */
typedef struct {
    Py_buffer seq, lengths, h, c, w, p, lut, hs, tg, tcell;
} Borrowed;

static void release(Borrowed *b) {
    Py_buffer *all[] = {&b->seq, &b->lengths, &b->h, &b->c, &b->w, &b->p, &b->lut, &b->hs, &b->tg, &b->tcell};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        PyBuffer_Release(all[i]);
}

/* Point a layer's arrays at the borrowed buffers: Layer and WideLayer name them alike. */
#define BIND(L, b, tracing)                                  \
    do {                                                     \
        (L).seq = (b).seq.buf;                               \
        (L).lengths = (b).lengths.buf;                       \
        (L).h = (b).h.buf;                                   \
        (L).c = (b).c.buf;                                   \
        (L).w = (b).w.buf;                                   \
        (L).p = (b).p.buf;                                   \
        (L).lut = (b).lut.buf;                               \
        (L).hs = (b).hs.buf;                                 \
        (L).trace_gates = (tracing) ? (b).tg.buf : NULL;     \
        (L).trace_cell = (tracing) ? (b).tcell.buf : NULL;   \
    } while (0)

/* A time loop's result: its count, or MemoryError when it could not allocate. */
static PyObject *finished(int code) {
    return code < 0 ? PyErr_NoMemory() : PyLong_FromLong(code);
}

static PyObject *run_layer(PyObject *self, PyObject *args) {
    (void)self;
    Borrowed b;
    Layer L;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "nnnnniiy*y*w*w*y*y*y*w*w*w*:run_layer", &L.n, &L.steps, &L.n_in,
                          &L.hidden, &L.rows, &L.c_frac, &L.kernel, &b.seq, &b.lengths, &b.h, &b.c, &b.w,
                          &b.p, &b.lut, &b.hs, &b.tg, &b.tcell))
        return NULL;
    const Py_ssize_t n = L.n, T = L.steps, H = L.hidden, R = L.rows;
    const int tracing = b.tg.len > 0;
    /* every size from Python is checked for overflow before it is trusted: n = 2**62
     * would otherwise wrap n * T * n_in to 0 and pass the buffer checks. Widths stay
     * far below INT_MAX (the kernels count inputs in an int). */
    Py_ssize_t s_seq, s_len, s_state, s_hs, s_tg, s_tc, s_w, s_p;
    const int shape_ok = n >= 0 && T >= 0 && L.n_in >= 0 && L.n_in <= (1 << 20) && H >= 1
                         && H <= (1 << 20) && R >= 4 * H && R <= (1 << 22) && R % 16 == 0;
    const int sizes_ok = shape_ok && size3(n, T, L.n_in, &s_seq) && size3(n, 8, 1, &s_len)
                         && size3(n, H, 4, &s_state) && size3(n, T, H, &s_hs)
                         && size3(s_hs, 4, 4, &s_tg) && size3(s_hs, 4, 1, &s_tc)
                         && size3(L.kernel == KERNEL_VNNI ? quads(L.n_in) + quads(H) : L.n_in + H, R, 4, &s_w)
                         && size3(N_PARAMS, R, 4, &s_p);
    if (!sizes_ok) {
        PyErr_SetString(PyExc_ValueError, "run_layer: bad shape (negative, too large, or sizes that overflow)");
    } else if (L.kernel < 0 || L.kernel > KERNEL_VNNI || (L.kernel == KERNEL_VNNI && !HAS_VNNI)) {
        PyErr_SetString(PyExc_ValueError, "run_layer: this build has no such kernel");
    } else if (L.c_frac < 0 || L.c_frac > 2 * OUT_FRAC - 1) {
        PyErr_SetString(PyExc_ValueError, "run_layer: c_frac out of range");
    } else if (!(aligned(&b.lengths, 8, "lengths") && aligned(&b.h, 4, "h") && aligned(&b.c, 4, "c")
                 && aligned(&b.w, L.kernel == KERNEL_VNNI ? 1 : 4, "w") && aligned(&b.p, 4, "params")
                 && aligned(&b.lut, 2, "lut") && aligned(&b.tg, 4, "trace_gates")
                 && aligned(&b.tcell, 4, "trace_cell"))) {
        /* the error is set */
    } else if (!expect(&b.p, s_p, "params")) {
        /* the error is set */
    } else if (!params_ok(b.p.buf, R, R)) {
        PyErr_SetString(PyExc_ValueError, "run_layer: a shift or table offset is out of range");
    } else if (expect(&b.seq, s_seq, "seq") && expect(&b.lengths, s_len, "lengths")
               && expect(&b.h, s_state, "h") && expect(&b.c, s_state, "c")
               && expect(&b.w, s_w, "w")
               && expect(&b.lut, (2 * TABLE + 2) * 2, "lut") && expect(&b.hs, s_hs, "hs")
               && (!tracing || (expect(&b.tg, s_tg, "trace_gates")
                                && expect(&b.tcell, s_tc, "trace_cell")))) {
        BIND(L, b, tracing);
        int code;
        Py_BEGIN_ALLOW_THREADS
        code = run(&L);
        Py_END_ALLOW_THREADS
        result = finished(code);
    }
    release(&b);
    return result;
}

/* What run_wide relies on to stay in bounds and defined: pre-shifts in 0..30, shifts in
 * 1..31, table offsets that keep every clamped z inside the table. */
static int wide_params_ok(const int64_t *p, Py_ssize_t R) {
    for (Py_ssize_t r = 0; r < R; r++) {
        const int64_t px = p[W_PX * R + r], ph = p[W_PH * R + r], sx = p[W_SX * R + r], sh = p[W_SH * R + r];
        const int64_t off = p[W_OFF * R + r], mx = p[W_MX * R + r], mh = p[W_MH * R + r], bx = p[W_BX * R + r];
        if (px < 0 || px > 30 || ph < 0 || ph > 30 || sx < 1 || sx > 31 || sh < 1 || sh > 31
            || off < 32768 || off > TABLE + 32768 || mx < 0 || mx > INT32_MAX || mh < 0 || mh > INT32_MAX
            || bx < INT32_MIN || bx > INT32_MAX)
            return 0;
    }
    return 1;
}

static PyObject *run_layer16(PyObject *self, PyObject *args) {
    (void)self;
    Borrowed b;
    WideLayer L;
    PyObject *result = NULL;
    if (!PyArg_ParseTuple(args, "nnnniy*y*w*w*y*y*y*w*w*w*:run_layer16", &L.n, &L.steps, &L.n_in, &L.hidden,
                          &L.c_frac, &b.seq, &b.lengths, &b.h, &b.c, &b.w, &b.p, &b.lut, &b.hs, &b.tg, &b.tcell))
        return NULL;
    const Py_ssize_t n = L.n, T = L.steps, H = L.hidden;
    const int tracing = b.tg.len > 0;
    Py_ssize_t s_seq, s_len, s_state, s_hs, s_tg, s_tc, s_w, s_p;
    const int sizes_ok = n >= 0 && T >= 0 && L.n_in >= 0 && L.n_in <= (1 << 20) && H >= 1 && H <= (1 << 20)
                         && size3(n, T, L.n_in, &s_seq) && size3(n, 8, 1, &s_len) && size3(n, H, 4, &s_state)
                         && size3(n, T, H, &s_hs) && size3(s_hs, 4, 4, &s_tg) && size3(s_hs, 4, 1, &s_tc)
                         && size3(L.n_in + H, 4 * H, 4, &s_w) && size3(N_WIDE, 4 * H, 8, &s_p);
    if (!sizes_ok) {
        PyErr_SetString(PyExc_ValueError, "run_layer16: bad shape (negative, too large, or sizes that overflow)");
    } else if (L.c_frac < 0 || L.c_frac > 2 * OUT_FRAC - 1) {
        PyErr_SetString(PyExc_ValueError, "run_layer16: c_frac out of range");
    } else if (!(aligned(&b.seq, 2, "seq") && aligned(&b.lengths, 8, "lengths") && aligned(&b.h, 4, "h")
                 && aligned(&b.c, 4, "c") && aligned(&b.w, 4, "w") && aligned(&b.p, 8, "params")
                 && aligned(&b.lut, 2, "lut") && aligned(&b.hs, 2, "hs") && aligned(&b.tg, 4, "trace_gates")
                 && aligned(&b.tcell, 4, "trace_cell"))) {
        /* the error is set */
    } else if (!expect(&b.p, s_p, "params")) {
        /* the error is set */
    } else if (!wide_params_ok(b.p.buf, 4 * H)) {
        PyErr_SetString(PyExc_ValueError, "run_layer16: a shift, multiplier or table offset is out of range");
    } else if (expect(&b.seq, 2 * s_seq, "seq") && expect(&b.lengths, s_len, "lengths")
               && expect(&b.h, s_state, "h") && expect(&b.c, s_state, "c") && expect(&b.w, s_w, "w")
               && expect(&b.lut, (2 * TABLE + 2) * 2, "lut") && expect(&b.hs, 2 * s_hs, "hs")
               && (!tracing || (expect(&b.tg, s_tg, "trace_gates") && expect(&b.tcell, s_tc, "trace_cell")))) {
        BIND(L, b, tracing);
        int code;
        Py_BEGIN_ALLOW_THREADS
        code = run_wide(&L);
        Py_END_ALLOW_THREADS
        result = finished(code);
    }
    release(&b);
    return result;
}

static PyMethodDef methods[] = {
    {"run_layer", run_layer, METH_VARARGS,
     "run_layer(n, steps, n_in, hidden, rows, c_frac, kernel, seq, lengths, h, c, w, params,"
     " lut, hs, trace_gates, trace_cell) -> OK or an overflow code (see edge_agent/recurrence.py)"},
    {"run_layer16", run_layer16, METH_VARARGS,
     "run_layer16(n, steps, n_in, hidden, c_frac, seq, lengths, h, c, w, params, lut, hs, trace_gates,"
     " trace_cell) -> OK or an overflow code: a 16-bit-state layer (see edge_agent/recurrence.py)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_recurrence", NULL, -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__recurrence(void) {
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "LANES", LANES) || PyModule_AddIntConstant(m, "OK", OK)
              || PyModule_AddIntConstant(m, "INPUT_OVERFLOW", INPUT_OVERFLOW)
              || PyModule_AddIntConstant(m, "RECURRENT_OVERFLOW", RECURRENT_OVERFLOW)
              || PyModule_AddIntConstant(m, "N_PARAMS", N_PARAMS)
              || PyModule_AddIntConstant(m, "N_WIDE", N_WIDE)
              || PyModule_AddIntConstant(m, "KERNEL_INT32", KERNEL_INT32)
              || PyModule_AddIntConstant(m, "KERNEL_FLOAT32", KERNEL_FLOAT32)
              || PyModule_AddIntConstant(m, "KERNEL_VNNI", KERNEL_VNNI)
              || PyModule_AddIntConstant(m, "HAS_VNNI", HAS_VNNI))) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
