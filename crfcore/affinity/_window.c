/* One mean-field update of a k×k window CRF (ConvCRF at blur 1), fused: message, compatibility, unary and softmax.
 *
 * For pixel i = (y, x) of an h×w grid with C classes, Q in channels-last rows of C floats:
 *
 *     M_i = Σ_{d in window, on the grid} G_d(i) · q_{i+d}           (the window's taps, centre 0)
 *     a_i = −ψu_i + M_i                 (Potts)   or   −ψu_i − μ M_i   (a C×C compatibility μ)
 *     out_i = softmax(a_i)
 *
 * Everything one pixel needs stays in registers: its taps are read once, the neighbours' rows come from cache, and
 * the new Q is written once, so an update moves about the bytes of the bandwidth bound (DESIGN.md §7). The classes
 * are processed 8 at a time as GCC vectors; a pixel's taps alternate between two accumulators so that consecutive
 * multiply-adds do not wait on each other. ψu and the new Q may also be (C, n) planes, the layout callers hold, so
 * that no pass transposes them.
 *
 * The message may also come computed elsewhere (the lattice's, DenseCRF): then the call is the update's epilogue,
 * compatibility, unary and softmax, in one pass instead of PyTorch's three to five.
 *
 * Called from Python with raw addresses of float32 tensors (crfcore/affinity/fused.py), on a band of rows, without
 * the GIL, so bands run on several threads. The caller guarantees that Q's storage has at least 8 readable floats
 * past its last row (whole vectors are loaded).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

#define INLINE __attribute__((always_inline))
#define MAX_BLOCKS 8 /* up to 64 classes per call in registers; more classes go through the caller's fallback */

static inline INLINE v8 load8(const float *p) {
    v8 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline INLINE v8 splat(float s) { return (v8){0} + s; }

/* lanes of x where mask is set, of y elsewhere (mask: a vector comparison's all-ones or zero lanes) */
static inline INLINE v8 select8(v8i mask, v8 x, v8 y) { return (v8)(((v8i)x & mask) | ((v8i)y & ~mask)); }

/* exp of each lane, args clamped to [-87, 88]: Cody–Waite reduction by ln 2 and a degree-6 polynomial (≤ 2 ulp
 * on the range softmax uses). */
static inline INLINE v8 exp8(v8 x) {
    x = select8(x < splat(-87.0f), splat(-87.0f), x);
    x = select8(x > splat(88.0f), splat(88.0f), x);
    v8 n = x * splat(1.44269504088896341f);
    /* round to nearest: add and subtract 1.5·2^23 */
    n = (n + splat(12582912.0f)) - splat(12582912.0f);
    v8 r = x - n * splat(0.693359375f);
    r = r - n * splat(-2.12194440e-4f);
    v8 p = splat(1.9875691500e-4f);
    p = p * r + splat(1.3981999507e-3f);
    p = p * r + splat(8.3334519073e-3f);
    p = p * r + splat(4.1665795894e-2f);
    p = p * r + splat(1.6666665459e-1f);
    p = p * r + splat(5.0000001201e-1f);
    p = p * r * r + r + splat(1.0f);
    v8i bits = __builtin_convertvector(n, v8i) + 127;
    bits <<= 23;
    v8 scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

static inline INLINE v8 max8(v8 a, v8 b) { return select8(a > b, a, b); }

/* the largest lane, in every lane */
static inline INLINE v8 hmax8(v8 v) {
    v = max8(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
    v = max8(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5));
    return max8(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6));
}

/* the sum of the lanes, in every lane */
static inline INLINE v8 hsum8(v8 v) {
    v += __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
    v += __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5);
    return v + __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6);
}

/* One call's arguments: a band of rows of one image. */
typedef struct {
    const float *q;      /* Q (n, c) rows, n = h·w; NULL: no window message */
    const float *message; /* or a message computed elsewhere, (n, c) rows; neither: the first softmax */
    const float *taps;   /* the window's weighted taps (n, k²), tap (dy + k/2)·k + dx + k/2 */
    const float *energy; /* ψu, (n, c) rows or, with energy_planes, (c, n) planes */
    const float *compat; /* μ (c, c) row-major, or NULL for Potts */
    float *out;          /* the new Q, (n, c) rows or, with out_planes, (c, n) planes */
    int energy_planes, out_planes;
    Py_ssize_t h, w, c, k, y0, y1;
} band_args;

/* the update with the number of class vectors `blocks` a compile-time constant, so that the accumulators live in
 * registers (see UPDATE_CASE) */
static inline INLINE void update_blocks(const band_args *args, const Py_ssize_t blocks) {
    const float *q = args->q, *taps = args->taps, *energy = args->energy, *compat = args->compat;
    float *out = args->out;
    const Py_ssize_t h = args->h, w = args->w, c = args->c, k = args->k, n = h * w;
    const Py_ssize_t tail = c - 8 * (blocks - 1), r = k / 2, k2 = k * k;
    v8 lane_id;
    for (int l = 0; l < 8; ++l) lane_id[l] = (float)l;
    const v8i valid = lane_id < splat((float)tail);
    float mu_cols[8 * MAX_BLOCKS * MAX_BLOCKS * 8]; /* μ[:, l'] for each l', padded to whole vectors */
    if (compat) {
        memset(mu_cols, 0, sizeof(float) * c * blocks * 8);
        for (Py_ssize_t lp = 0; lp < c; ++lp)
            for (Py_ssize_t l = 0; l < c; ++l) mu_cols[lp * blocks * 8 + l] = compat[l * c + lp];
    }
    float tile[8 * MAX_BLOCKS * 8]; /* with out_planes: the last few pixels' results, a row of classes each */
    for (Py_ssize_t y = args->y0; y < args->y1; ++y) {
        const Py_ssize_t dy0 = y - r < 0 ? -y : -r, dy1 = y + r >= h ? h - 1 - y : r;
        for (Py_ssize_t x = 0; x < w; ++x) {
            const Py_ssize_t i = y * w + x;
            const Py_ssize_t dx0 = x - r < 0 ? -x : -r, dx1 = x + r >= w ? w - 1 - x : r;
            v8 acc[MAX_BLOCKS], acc2[MAX_BLOCKS];
            for (Py_ssize_t b = 0; b < blocks; ++b) acc[b] = acc2[b] = splat(0.0f);
            if (q) {
                const float *tap_row = taps + i * k2;
                for (Py_ssize_t dy = dy0; dy <= dy1; ++dy) {
                    const float *t = tap_row + (dy + r) * k + r;
                    const float *src = q + (i + dy * w) * c;
                    Py_ssize_t dx = dx0;
                    for (; dx + 1 <= dx1; dx += 2) {
                        const float g0 = t[dx], g1 = t[dx + 1]; /* scalar × vector: one broadcast each */
                        const float *s0 = src + dx * c, *s1 = s0 + c;
                        for (Py_ssize_t b = 0; b < blocks; ++b) {
                            acc[b] += g0 * load8(s0 + 8 * b);
                            acc2[b] += g1 * load8(s1 + 8 * b);
                        }
                    }
                    if (dx <= dx1) {
                        const float g0 = t[dx];
                        const float *s0 = src + dx * c;
                        for (Py_ssize_t b = 0; b < blocks; ++b) acc[b] += g0 * load8(s0 + 8 * b);
                    }
                }
            }
            if (args->message) { /* (lanes past c hold anything until the mask below) */
                const float *mrow = args->message + i * c;
                if (i * c + 8 * blocks <= n * c) {
                    for (Py_ssize_t b = 0; b < blocks; ++b) acc[b] = load8(mrow + 8 * b);
                } else {
                    float mv[MAX_BLOCKS * 8] = {0};
                    memcpy(mv, mrow, sizeof(float) * c);
                    for (Py_ssize_t b = 0; b < blocks; ++b) acc[b] = load8(mv + 8 * b);
                }
            }
            for (Py_ssize_t b = 0; b < blocks; ++b) acc[b] += acc2[b];
            /* a = −ψu (lanes past c hold anything until the mask below) */
            v8 a[MAX_BLOCKS];
            if (!args->energy_planes && i * c + 8 * blocks <= n * c) { /* whole vectors stay inside */
                for (Py_ssize_t b = 0; b < blocks; ++b) a[b] = -load8(energy + i * c + 8 * b);
            } else {
                float e[MAX_BLOCKS * 8] = {0};
                for (Py_ssize_t l = 0; l < c; ++l) e[l] = args->energy_planes ? energy[l * n + i] : energy[i * c + l];
                for (Py_ssize_t b = 0; b < blocks; ++b) a[b] = -load8(e + 8 * b);
            }
            if (compat) {
                float mv[MAX_BLOCKS * 8];
                memcpy(mv, acc, sizeof(v8) * blocks);
                for (Py_ssize_t lp = 0; lp < c; ++lp) {
                    const float s = mv[lp];
                    const float *col = mu_cols + lp * blocks * 8;
                    for (Py_ssize_t b = 0; b < blocks; ++b) a[b] -= s * load8(col + 8 * b);
                }
            } else {
                for (Py_ssize_t b = 0; b < blocks; ++b) a[b] += acc[b];
            }
            /* softmax over the c valid lanes */
            a[blocks - 1] = select8(valid, a[blocks - 1], splat(-INFINITY));
            v8 top = a[0];
            for (Py_ssize_t b = 1; b < blocks; ++b) top = max8(top, a[b]);
            const v8 peak = hmax8(top);
            v8 sum = splat(0.0f);
            for (Py_ssize_t b = 0; b < blocks; ++b) {
                a[b] = exp8(a[b] - peak);
                if (b == blocks - 1) a[b] = select8(valid, a[b], splat(0.0f));
                sum += a[b];
            }
            const v8 inv = splat(1.0f) / hsum8(sum);
            for (Py_ssize_t b = 0; b < blocks; ++b) a[b] *= inv;
            if (args->out_planes) {
                /* 8 pixels of a row at a time: each plane then takes one vector store of 8 neighbours */
                const Py_ssize_t slot = x % 8;
                memcpy(tile + slot * blocks * 8, a, sizeof(v8) * blocks);
                if (slot == 7 || x + 1 == w) {
                    const Py_ssize_t first = i - slot;
                    for (Py_ssize_t l = 0; l < c; ++l) {
                        v8 v;
                        for (int j = 0; j < 8; ++j) v[j] = tile[j * blocks * 8 + l];
                        if (slot == 7)
                            memcpy(out + l * n + first, &v, sizeof v);
                        else
                            for (Py_ssize_t j = 0; j <= slot; ++j) out[l * n + first + j] = v[j];
                    }
                }
            } else {
                float *o = out + i * c;
                for (Py_ssize_t b = 0; b + 1 < blocks; ++b) memcpy(o + 8 * b, &a[b], sizeof(v8));
                /* the last vector spills into the next pixels' rows, which are written after this one, except
                 * past the band's end (another thread's first row, or the end of the buffer) */
                if (i * c + 8 * blocks <= args->y1 * w * c)
                    memcpy(o + 8 * (blocks - 1), &a[blocks - 1], sizeof(v8));
                else
                    for (Py_ssize_t l = 0; l < tail; ++l) o[8 * (blocks - 1) + l] = a[blocks - 1][l];
            }
        }
    }
}

/* Each class count in vectors gets its own copy of the loop, and on x86-64 one more compiled for AVX2 + FMA,
 * chosen at import when the CPU has them (the portable copy runs the same vectors as SSE pairs). */
#if defined(__x86_64__)
#define AVX2_CLONES 1
#define UPDATE_CASE(n)                                                                                             \
    static void update_##n(const band_args *args) { update_blocks(args, n); }                                      \
    __attribute__((target("avx2,fma"))) static void update_##n##_avx2(const band_args *args) {                     \
        update_blocks(args, n);                                                                                    \
    }
#else
#define UPDATE_CASE(n) \
    static void update_##n(const band_args *args) { update_blocks(args, n); }
#endif
UPDATE_CASE(1)
UPDATE_CASE(2)
UPDATE_CASE(3)
UPDATE_CASE(4)
UPDATE_CASE(5)
UPDATE_CASE(6)
UPDATE_CASE(7)
UPDATE_CASE(8)

typedef void (*update_fn)(const band_args *);
static update_fn update_by_blocks[MAX_BLOCKS] = {update_1, update_2, update_3, update_4,
                                                 update_5, update_6, update_7, update_8};
static const char *instruction_set = "portable";

static void choose_instruction_set(void) {
#ifdef AVX2_CLONES
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        const update_fn fast[MAX_BLOCKS] = {update_1_avx2, update_2_avx2, update_3_avx2, update_4_avx2,
                                            update_5_avx2, update_6_avx2, update_7_avx2, update_8_avx2};
        memcpy(update_by_blocks, fast, sizeof fast);
        instruction_set = "avx2";
    }
#endif
}

static PyObject *update(PyObject *self, PyObject *args) {
    Py_ssize_t q, message, taps, energy, compat, out;
    band_args a;
    (void)self;
    if (!PyArg_ParseTuple(args, "nnnnpnnpnnnnnn", &q, &message, &taps, &energy, &a.energy_planes, &compat, &out,
                          &a.out_planes, &a.h, &a.w, &a.c, &a.k, &a.y0, &a.y1))
        return NULL;
    if (a.c < 1 || a.c > 8 * MAX_BLOCKS || a.k < 1 || a.k % 2 == 0 || a.y0 < 0 || a.y1 > a.h || a.y0 > a.y1 ||
        (q && !taps) || (q && message) || !energy || !out) {
        PyErr_Format(PyExc_ValueError, "window update: unsupported arguments (c=%zd, k=%zd, rows %zd..%zd of %zd)",
                     a.c, a.k, a.y0, a.y1, a.h);
        return NULL;
    }
    a.q = (const float *)q;
    a.message = (const float *)message;
    a.taps = (const float *)taps;
    a.energy = (const float *)energy;
    a.compat = (const float *)compat;
    a.out = (float *)out;
    const update_fn fn = update_by_blocks[(a.c + 7) / 8 - 1];
    Py_BEGIN_ALLOW_THREADS
    fn(&a);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"update", update, METH_VARARGS,
     "update(q, message, taps, energy, energy_planes, compat, out, out_planes, h, w, c, k, y0, y1): one fused "
     "mean-field update of rows y0..y1 of an image (addresses of float32 buffers; the window's message from q and "
     "taps, or a given message, or none if both are 0; compat = 0 is Potts; the *_planes flags say (c, n) planes "
     "instead of (n, c) rows)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_window", "Fused k×k window mean-field update.", -1, methods, NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__window(void) {
    choose_instruction_set();
    PyObject *m = PyModule_Create(&module);
    if (m && (PyModule_AddIntConstant(m, "MAX_CLASSES", 8 * MAX_BLOCKS) < 0 ||
              PyModule_AddStringConstant(m, "INSTRUCTION_SET", instruction_set) < 0)) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
