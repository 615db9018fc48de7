/*
 * metaembed_rag.scoring._residual: budgeted MaxSim on residual-compressed candidates.
 *
 * A stored candidate vector is a centroid id (uint16) plus packed residual codes (uint8, 8/nbits
 * dimensions a byte). For each (query, candidate id) pair, the candidate's first r_c vectors are
 * decoded into a small per-thread buffer,
 *
 *     v[d] = centroids[cid][d] + table[d / g][byte][d % g]       (g = 8 / nbits)
 *
 * (one float32 addition, bit-identical to ResidualCodebook.decode), then scored. When
 * `normalize` is set (a codebook trained on unit vectors), each dot product with a decoded vector
 * is multiplied by 1 / |v| (float32 sum of squares): the score of v rescaled to unit length,
 * within float32 rounding of decoding, rescaling and then scoring; without it the factor is
 * exactly 1. The score:
 * s(q, c) = sum_{i < r_q} max_{j < r_c} <q_i, v_j>, float32 with fused multiply-add, no
 * fast-math. Nothing larger than one candidate is ever decoded.
 *
 * Instruction set: an AVX2+FMA build of the loops is chosen at run time when the CPU has it,
 * otherwise a portable one. Work is split over plain pthreads; the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *out;                 /* (nq, m) */
    const float *q;             /* (nq, r_q, D) contiguous */
    int64_t nq, m, r_q, D, r_c;
    const int64_t *ids;         /* (nq, m) contiguous */
    const uint16_t *cid;        /* (N, Ks) */
    const uint8_t *packed;      /* (N, Ks, P) */
    int64_t ks, P;              /* stored vectors per candidate, bytes per vector */
    const float *centroids;     /* (C, D) */
    int64_t ncent;
    const float *table;         /* (P, 256, g) */
    int g;                      /* dimensions per byte */
    int normalize;              /* rescale decoded vectors to unit length */
    int64_t begin, end;         /* work items [begin, end) of this thread */
    int avx2;
    int bad_id;                 /* set when a centroid id or row is out of range */
} job_t;

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));

#define DECODE_LOOP(G)                                                                            \
    for (int64_t p = 0; p < jb->P; p++) {                                                         \
        const float *t = tab + ((size_t)p * 256 + pk[p]) * (G);                                   \
        const float *c = cent + p * (G);                                                          \
        float *o = out + p * (G);                                                                 \
        for (int e = 0; e < (G); e++) o[e] = c[e] + t[e];                                         \
    }

#define DEFINE_SCORE(SFX)                                                                         \
    static void decode_one##SFX(const job_t *jb, const uint8_t *pk, const float *cent,            \
                                float *out)                                                       \
    {                                                                                             \
        const int g = jb->g;                                                                      \
        const float *tab = jb->table;                                                             \
        switch (g) { /* constant widths: the inner loop unrolls */                                \
        case 8: DECODE_LOOP(8); break;                                                            \
        case 4: DECODE_LOOP(4); break;                                                            \
        case 2: DECODE_LOOP(2); break;                                                            \
        default: DECODE_LOOP(g); break;                                                           \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    static float dot##SFX(const float *a, const float *b, int64_t D)                              \
    {                                                                                             \
        v8 acc = {0, 0, 0, 0, 0, 0, 0, 0};                                                        \
        int64_t d = 0;                                                                            \
        for (; d + 8 <= D; d += 8) acc += *(const v8u *)(a + d) * *(const v8u *)(b + d);          \
        float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])); \
        for (; d < D; d++) s += a[d] * b[d];                                                      \
        return s;                                                                                 \
    }                                                                                             \
                                                                                                  \
    /* 1 / |v|, or 1 for a zero vector */                                                        \
    static float inv_len##SFX(const float *v, int64_t D)                                          \
    {                                                                                             \
        const float len = sqrtf(dot##SFX(v, v, D));                                               \
        return len > 0.0f ? 1.0f / len : 1.0f;                                                    \
    }                                                                                             \
                                                                                                  \
    static inline float hsum##SFX(v8 acc)                                                         \
    {                                                                                             \
        return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])); \
    }                                                                                             \
                                                                                                  \
    /* best[i] = max(best[i], <q_i, b_j> * inv[j]) for 4 decoded vectors b (same sums as dot()) */ \
    static void block4##SFX(const float *q, int64_t r_q, const float *b, int64_t D,               \
                            const float *inv, float *best)                                        \
    {                                                                                             \
        const float *b0 = b, *b1 = b + D, *b2 = b + 2 * D, *b3 = b + 3 * D;                       \
        const int64_t D8 = D - D % 8;                                                             \
        for (int64_t i = 0; i < r_q; i++) {                                                       \
            const float *qi = q + i * D;                                                          \
            v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                            \
            for (int64_t d = 0; d < D8; d += 8) {                                                 \
                const v8 x = *(const v8u *)(qi + d);                                              \
                a0 += x * *(const v8u *)(b0 + d);                                                 \
                a1 += x * *(const v8u *)(b1 + d);                                                 \
                a2 += x * *(const v8u *)(b2 + d);                                                 \
                a3 += x * *(const v8u *)(b3 + d);                                                 \
            }                                                                                     \
            float s0 = hsum##SFX(a0), s1 = hsum##SFX(a1), s2 = hsum##SFX(a2), s3 = hsum##SFX(a3); \
            for (int64_t d = D8; d < D; d++) {                                                    \
                s0 += qi[d] * b0[d]; s1 += qi[d] * b1[d];                                         \
                s2 += qi[d] * b2[d]; s3 += qi[d] * b3[d];                                         \
            }                                                                                     \
            s0 *= inv[0]; s1 *= inv[1]; s2 *= inv[2]; s3 *= inv[3];                               \
            float m = best[i];                                                                    \
            if (s0 > m) m = s0;                                                                   \
            if (s1 > m) m = s1;                                                                   \
            if (s2 > m) m = s2;                                                                   \
            if (s3 > m) m = s3;                                                                   \
            best[i] = m;                                                                          \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    static void run##SFX(job_t *jb, float *buf)                                                   \
    {                                                                                             \
        const int64_t D = jb->D, r_c = jb->r_c, r_q = jb->r_q;                                    \
        float best[256], inv[4] = {1.0f, 1.0f, 1.0f, 1.0f};                                       \
        for (int64_t p = jb->begin; p < jb->end; p++) {                                           \
            const int64_t qi = p / jb->m;                                                         \
            const int64_t row = jb->ids[p];                                                       \
            const uint16_t *cid = jb->cid + (size_t)row * jb->ks;                                 \
            const uint8_t *pk = jb->packed + (size_t)row * jb->ks * jb->P;                        \
            const float *q = jb->q + (size_t)qi * r_q * D;                                        \
            for (int64_t i = 0; i < r_q; i++) best[i] = -__builtin_inff();                        \
            for (int64_t j0 = 0; j0 < r_c; j0 += 4) {                                             \
                const int64_t nj = r_c - j0 < 4 ? r_c - j0 : 4;                                   \
                for (int64_t j = 0; j < nj; j++) {                                                \
                    const uint16_t c = cid[j0 + j];                                               \
                    if (c >= jb->ncent) { jb->bad_id = 1; return; }                               \
                    decode_one##SFX(jb, pk + (j0 + j) * jb->P, jb->centroids + (size_t)c * D,     \
                                    buf + j * D);                                                 \
                    if (jb->normalize) inv[j] = inv_len##SFX(buf + j * D, D);                     \
                }                                                                                 \
                if (nj == 4) {                                                                    \
                    block4##SFX(q, r_q, buf, D, inv, best);                                       \
                } else {                                                                          \
                    for (int64_t i = 0; i < r_q; i++)                                             \
                        for (int64_t j = 0; j < nj; j++) {                                        \
                            const float s = dot##SFX(q + i * D, buf + j * D, D) * inv[j];         \
                            if (s > best[i]) best[i] = s;                                         \
                        }                                                                         \
                }                                                                                 \
            }                                                                                     \
            float total = 0.0f;                                                                   \
            for (int64_t i = 0; i < r_q; i++) total += best[i];                                   \
            jb->out[p] = total;                                                                   \
        }                                                                                         \
    }

DEFINE_SCORE(_generic)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
DEFINE_SCORE(_avx2)
#pragma GCC pop_options
#endif

static void *worker(void *arg)
{
    job_t *jb = (job_t *)arg;
    float *buf = (float *)malloc(sizeof(float) * (size_t)(jb->r_c * jb->D + 8));
    if (!buf) { jb->bad_id = 2; return NULL; }
#ifdef HAVE_AVX2
    if (jb->avx2) run_avx2(jb, buf); else run_generic(jb, buf);
#else
    run_generic(jb, buf);
#endif
    free(buf);
    return NULL;
}

static PyObject *score(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out, q, ids, cid, packed, cent, table;
    long long nq, m, r_q, D, r_c, ks, P, ncent, nrows;
    int g, threads, force_generic, normalize;
    if (!PyArg_ParseTuple(args, "KLLKLLLKLKKLLKLKiiii", &out, &nq, &m, &q, &r_q, &D, &r_c, &ids,
                          &nrows, &cid, &packed, &ks, &P, &cent, &ncent, &table, &g, &threads,
                          &force_generic, &normalize))
        return NULL;
    if (r_q > 256) {
        PyErr_SetString(PyExc_ValueError, "the residual kernel takes at most 256 query vectors");
        return NULL;
    }
    int64_t items = (int64_t)nq * m;
    const int64_t *idp = (const int64_t *)(uintptr_t)ids;
    for (int64_t p = 0; p < items; p++) {
        if (idp[p] < 0 || idp[p] >= nrows) {
            PyErr_Format(PyExc_IndexError, "candidate row %lld out of range [0, %lld)",
                         (long long)idp[p], nrows);
            return NULL;
        }
    }
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (items < threads) threads = items > 0 ? (int)items : 1;
    int avx2 = 0;
#ifdef HAVE_AVX2
    __builtin_cpu_init();
    avx2 = !force_generic && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    job_t jobs[64];
    pthread_t tids[64];
    int started[64] = {0};
    for (int t = 0; t < threads; t++) {
        job_t *jb = &jobs[t];
        memset(jb, 0, sizeof *jb);
        jb->out = (float *)(uintptr_t)out;
        jb->q = (const float *)(uintptr_t)q;
        jb->nq = nq; jb->m = m; jb->r_q = r_q; jb->D = D; jb->r_c = r_c;
        jb->ids = idp;
        jb->cid = (const uint16_t *)(uintptr_t)cid;
        jb->packed = (const uint8_t *)(uintptr_t)packed;
        jb->ks = ks; jb->P = P;
        jb->centroids = (const float *)(uintptr_t)cent;
        jb->ncent = ncent;
        jb->table = (const float *)(uintptr_t)table;
        jb->g = g;
        jb->normalize = normalize;
        jb->begin = items * t / threads;
        jb->end = items * (t + 1) / threads;
        jb->avx2 = avx2;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, worker, &jobs[t]) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t]) worker(&jobs[t]); /* could not start a thread: do its share here */
    worker(&jobs[0]);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++) {
        if (jobs[t].bad_id == 1) {
            PyErr_SetString(PyExc_ValueError,
                            "a stored centroid id is out of range: the index is corrupt "
                            "(restore it or rebuild it)");
            return NULL;
        }
        if (jobs[t].bad_id == 2) return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *has_avx2(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
#ifdef HAVE_AVX2
    __builtin_cpu_init();
    return PyBool_FromLong(__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"score", score, METH_VARARGS, "MaxSim of queries against residual-coded candidates."},
    {"has_avx2", has_avx2, METH_NOARGS, "Whether the AVX2+FMA path runs here."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_residual", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__residual(void) { return PyModule_Create(&module); }
