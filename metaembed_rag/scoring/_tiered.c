/*
 * metaembed_rag.scoring._tiered: budgeted MaxSim on candidates stored by tiered gain-shape
 * transform coding (metaembed_rag.index.tiered).
 *
 * A candidate row holds, slot after slot, each stored vector's codes: for the slot's tier g,
 * axis t of the tier's coded axes has `bits` bits at bit offset pos[g][t] of the slot, packed
 * little-endian. Its decoded value is vals[g][voff[g][t] + code] (the bucket mean; each axis's
 * 2**bits values stored one after the other, so a tier's table stays in the L1/L2 caches). The score of query
 * vector j against vector k of a candidate is
 *
 *     s_jk = qc[j] + qo[j][k] + gain[k] * sum_t qrot[g][j][t] * vals[g][t][code_t]
 *
 * where qc = <q_j, centre>, qo = <q_j, o_k> and qrot = the query rotated onto the tier's coded
 * axes times their scales (all three computed once per query by the caller, scoring/tiered.py),
 * so only the coded values of one vector are ever decoded, into a per-thread buffer. The score
 * is s(q, c) = sum_{j < r_q} max_{k < r_c} s_jk, float32 (16 query vectors a step, one a lane,
 * two stored vectors of a tier at a time; each dot product summed over the axes in two
 * interleaved partial sums; no fast-math).
 *
 * An AVX-512 build of the loops (codes and values read 16 axes a step with gathers; the row's 3
 * padding bytes keep every 32-bit read inside it) is chosen at run time when the CPU has it
 * (`isa` < 0), or asked for (`isa` 2; 0 is the portable build); work is split over plain
 * pthreads, GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *out;              /* (nq, m) */
    const float *qrot;       /* (nq, G, RQ / 16, A, 16) */
    const float *qo;         /* (nq, ks, RQ) */
    const float *qc;         /* (nq, m, RQ) */
    const float *gains;      /* (nq, m, r_c) */
    const int64_t *ids;      /* (nq, m) */
    const uint8_t *codes;    /* (N, W) */
    int64_t W, ks, nq, m, r_q, RQ, r_c, A, G;
    const int64_t *slot_offset; /* (ks + 1,) */
    const int32_t *slot_group;  /* (ks,) */
    const int32_t *nact;     /* (G,) coded axes per tier (<= A) */
    const int32_t *pos;      /* (G, A) bit offsets in a slot */
    const int32_t *mask;     /* (G, A) (1 << bits) - 1 */
    const int32_t *voff;     /* (G, A) where each coded axis's values start in its tier's row */
    const float *vals;       /* (G, V) the values, axis after axis (2**bits each) */
    int64_t V;
    int64_t begin, end;
} job_t;

typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));
typedef int32_t v16i __attribute__((vector_size(64)));

/* the coded values of one vector: buf[t] = vals[t][code_t] for t < n */
static inline void decode_generic(const uint8_t *sp, int32_t n, const int32_t *pos,
                                  const int32_t *mask, const int32_t *voff, const float *vals,
                                  float *buf)
{
    for (int32_t t = 0; t < n; t++) {
        const int32_t p = pos[t];
        const uint32_t w = (uint32_t)sp[p >> 3] | ((uint32_t)sp[(p >> 3) + 1] << 8);
        buf[t] = vals[voff[t] + (int32_t)((w >> (p & 7)) & (uint32_t)mask[t])];
    }
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512 1
#include <immintrin.h>
/* 16 axes a step: gather the 32-bit word at each code's byte (the row's PAD bytes keep the
 * last ones inside it), shift and mask, then gather the values; the same values as above.
 * Lanes past n read valid padding (pos 0, zero values) and are never multiplied by a
 * non-zero query coefficient. */
__attribute__((target("avx512f,avx2,fma"))) static inline void
decode_avx512(const uint8_t *sp, int32_t n, const int32_t *pos, const int32_t *mask,
              const int32_t *voff, const float *vals, float *buf)
{
    const __m512i seven = _mm512_set1_epi32(7);
    for (int32_t t = 0; t < n; t += 16) {
        const __m512i p = _mm512_loadu_si512((const void *)(pos + t));
        const __m512i w = _mm512_i32gather_epi32(_mm512_srli_epi32(p, 3), (const void *)sp, 1);
        const __m512i code = _mm512_and_si512(_mm512_srlv_epi32(w, _mm512_and_si512(p, seven)),
                                              _mm512_loadu_si512((const void *)(mask + t)));
        const __m512i idx = _mm512_add_epi32(code, _mm512_loadu_si512((const void *)(voff + t)));
        _mm512_storeu_ps(buf + t, _mm512_i32gather_ps(idx, vals, 4));
    }
}
#endif

/* Query vectors are scored 16 at a time, one lane each (RQ: r_q padded to a multiple of 16):
 * for every coded value buf[t], 16 lanes += qrot[t][lane] * buf[t], so no horizontal sums. */
#define DEFINE_RANGE(SUFFIX, ATTR, DECODE)                                                        \
    ATTR static void range##SUFFIX(const job_t *jb, float *buf)                                   \
    {                                                                                             \
        const int64_t A = jb->A, RQ = jb->RQ, r_c = jb->r_c, nblk = RQ / 16;                      \
        v16 best[16];                                                                             \
        for (int64_t item = jb->begin; item < jb->end; item++) {                                  \
            const int64_t i = item / jb->m;                                                       \
            const uint8_t *row = jb->codes + jb->ids[item] * jb->W;                               \
            const float *qc = jb->qc + item * RQ;                                                 \
            const float *gains = jb->gains + item * r_c;                                          \
            for (int64_t b = 0; b < nblk; b++) best[b] = (v16){0} - INFINITY;                     \
            for (int64_t k = 0; k < r_c;) {                                                       \
                const int g = jb->slot_group[k];                                                  \
                const int32_t n = jb->nact[g];                                                    \
                /* two vectors of one tier at a time: each query row read once for both */        \
                const int two = k + 1 < r_c && jb->slot_group[k + 1] == g;                        \
                float *buf2 = buf + A + 16;                                                       \
                DECODE(row + jb->slot_offset[k], n, jb->pos + g * A, jb->mask + g * A,            \
                       jb->voff + g * A, jb->vals + (size_t)g * jb->V, buf);                      \
                if (two)                                                                          \
                    DECODE(row + jb->slot_offset[k + 1], n, jb->pos + g * A, jb->mask + g * A,    \
                           jb->voff + g * A, jb->vals + (size_t)g * jb->V, buf2);                 \
                const v16 gk = (v16){0} + gains[k];                                               \
                const v16 gk2 = (v16){0} + gains[two ? k + 1 : k];                                \
                const float *qo = jb->qo + (i * jb->ks + k) * RQ;                                 \
                for (int64_t b = 0; b < nblk; b++) {                                              \
                    const float *qt = jb->qrot + (((i * jb->G + g) * nblk + b) * A) * 16;         \
                    v16 a0 = {0}, a1 = {0}, b0 = {0}, b1 = {0};                                   \
                    int32_t t = 0;                                                                \
                    if (two) {                                                                    \
                        for (; t + 1 < n; t += 2) {                                               \
                            const v16 x0 = *(const v16u *)(qt + t * 16);                          \
                            const v16 x1 = *(const v16u *)(qt + t * 16 + 16);                     \
                            a0 += x0 * buf[t];                                                    \
                            b0 += x0 * buf2[t];                                                   \
                            a1 += x1 * buf[t + 1];                                                \
                            b1 += x1 * buf2[t + 1];                                               \
                        }                                                                         \
                        for (; t < n; t++) {                                                      \
                            const v16 x0 = *(const v16u *)(qt + t * 16);                          \
                            a0 += x0 * buf[t];                                                    \
                            b0 += x0 * buf2[t];                                                   \
                        }                                                                         \
                    } else {                                                                      \
                        for (; t + 1 < n; t += 2) {                                               \
                            a0 += *(const v16u *)(qt + t * 16) * buf[t];                          \
                            a1 += *(const v16u *)(qt + t * 16 + 16) * buf[t + 1];                 \
                        }                                                                         \
                        for (; t < n; t++) a0 += *(const v16u *)(qt + t * 16) * buf[t];           \
                    }                                                                             \
                    const v16 base = *(const v16u *)(qc + b * 16);                                \
                    v16 sc = base + *(const v16u *)(qo + b * 16) + gk * (a0 + a1);                \
                    v16i up = sc > best[b];                                                       \
                    best[b] = (v16)(((v16i)sc & up) | ((v16i)best[b] & ~up));                     \
                    if (two) {                                                                    \
                        sc = base + *(const v16u *)(qo + RQ + b * 16) + gk2 * (b0 + b1);          \
                        up = sc > best[b];                                                        \
                        best[b] = (v16)(((v16i)sc & up) | ((v16i)best[b] & ~up));                 \
                    }                                                                             \
                }                                                                                 \
                k += two ? 2 : 1;                                                                 \
            }                                                                                     \
            float total = 0.0f;                                                                   \
            for (int64_t j = 0; j < jb->r_q; j++) total += best[j / 16][j % 16];                  \
            jb->out[item] = total;                                                                \
        }                                                                                         \
    }

DEFINE_RANGE(_generic, , decode_generic)
#ifdef HAVE_AVX512
DEFINE_RANGE(_avx512, __attribute__((target("avx512f,avx2,fma"))), decode_avx512)
#endif

static int best_isa(void)
{
#ifdef HAVE_AVX512
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return 2;
#endif
    return 0;
}

typedef struct {
    job_t jb;
    int isa;
    int oom;
} task_t;

static void *worker(void *arg)
{
    task_t *tk = (task_t *)arg;
    /* the coded values of two vectors (A + 16 floats each; lanes past a tier's coded axes
     * meet zero query coefficients) */
    float *buf = (float *)calloc(2 * ((size_t)tk->jb.A + 16), sizeof(float));
    if (!buf) { tk->oom = 1; return NULL; }
#ifdef HAVE_AVX512
    if (tk->isa == 2) range_avx512(&tk->jb, buf);
    else range_generic(&tk->jb, buf);
#else
    range_generic(&tk->jb, buf);
#endif
    free(buf);
    return NULL;
}

static PyObject *score(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out, qrot, qo, qc, gains, ids, codes, slot_offset, slot_group, nact, pos,
        mask, voff, vals;
    long long nq, m, r_q, RQ, r_c, A, G, W, ks, nrows, V;
    int threads, isa;
    if (!PyArg_ParseTuple(args, "KKKKKKKLLLLLLLLLLKKKKKKKLii", &out, &qrot, &qo, &qc, &gains,
                          &ids, &codes, &nq, &m, &r_q, &RQ, &r_c, &A, &G, &W, &ks, &nrows,
                          &slot_offset, &slot_group, &nact, &pos, &mask, &voff, &vals, &V,
                          &threads, &isa))
        return NULL;
    if (RQ > 256 || RQ % 16 || r_q > RQ || A % 16) {
        PyErr_SetString(PyExc_ValueError,
                        "tiered kernel: r_q <= RQ <= 256, RQ and A multiples of 16");
        return NULL;
    }
    job_t jb = {
        .out = (float *)(uintptr_t)out, .qrot = (const float *)(uintptr_t)qrot,
        .qo = (const float *)(uintptr_t)qo, .qc = (const float *)(uintptr_t)qc,
        .gains = (const float *)(uintptr_t)gains, .ids = (const int64_t *)(uintptr_t)ids,
        .codes = (const uint8_t *)(uintptr_t)codes, .W = W, .ks = ks, .nq = nq, .m = m,
        .r_q = r_q, .RQ = RQ, .r_c = r_c, .A = A, .G = G,
        .slot_offset = (const int64_t *)(uintptr_t)slot_offset,
        .slot_group = (const int32_t *)(uintptr_t)slot_group,
        .nact = (const int32_t *)(uintptr_t)nact, .pos = (const int32_t *)(uintptr_t)pos,
        .mask = (const int32_t *)(uintptr_t)mask, .voff = (const int32_t *)(uintptr_t)voff,
        .vals = (const float *)(uintptr_t)vals, .V = V,
    };
    const int64_t items = nq * m;
    for (int64_t p = 0; p < items; p++) {
        if (jb.ids[p] < 0 || jb.ids[p] >= nrows) {
            PyErr_Format(PyExc_IndexError, "candidate row %lld out of range [0, %lld)",
                         (long long)jb.ids[p], nrows);
            return NULL;
        }
    }
    const int best = best_isa();
    if (isa < 0) isa = best;
    if (isa > best || isa == 1) {
        PyErr_Format(PyExc_RuntimeError,
                     "instruction set %d is not built for the tiered kernel on this CPU", isa);
        return NULL;
    }
    if (threads < 1) threads = 1;
    if (threads > 64) threads = 64;
    if (items < threads) threads = items > 0 ? (int)items : 1;
    task_t tasks[64];
    pthread_t tids[64];
    int started[64] = {0};
    for (int t = 0; t < threads; t++) {
        tasks[t].jb = jb;
        tasks[t].jb.begin = items * t / threads;
        tasks[t].jb.end = items * (t + 1) / threads;
        tasks[t].isa = isa;
        tasks[t].oom = 0;
    }
    Py_BEGIN_ALLOW_THREADS
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, worker, &tasks[t]) == 0;
    for (int t = 1; t < threads; t++)
        if (!started[t]) worker(&tasks[t]);
    worker(&tasks[0]);
    for (int t = 1; t < threads; t++)
        if (started[t]) pthread_join(tids[t], NULL);
    Py_END_ALLOW_THREADS
    for (int t = 0; t < threads; t++)
        if (tasks[t].oom) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyLong_FromLong(best_isa());
}

static PyMethodDef methods[] = {
    {"score", score, METH_VARARGS, "MaxSim of queries against tiered-coded candidates."},
    {"best_isa", py_best_isa, METH_NOARGS, "The fastest build this CPU runs: 0 or 2."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_tiered", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__tiered(void) { return PyModule_Create(&module); }
