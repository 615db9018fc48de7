/*
 * metaembed_rag.scoring._tiered: budgeted MaxSim on candidates stored by tiered gain-shape
 * transform coding (metaembed_rag.index.tiered).
 *
 * Layout. A tier of S slots (stored vectors) is a block of B * S bytes: byte j of the tier's
 * slot s (its codes packed little-endian, axis after axis, B bytes a slot) is at
 * block[j * S + s], so byte j of every slot of the tier lies in S consecutive bytes. Coded axis
 * t of tier g has bits(t) bits at bit offset pos[g][t] of a slot; its decoded value is
 * vals[g][voff[g][t] + code] (the bucket mean; each axis's 2**bits values one after the other).
 * The score of query vector j against stored vector k of a candidate is
 *
 *     s_jk = qc[j] + qo[j][k] + gain[k] * sum_t qrot[g][j][t] * vals[g][t][code_kt]
 *
 * where qrot = the query rotated onto the tier's coded axes times their scales and qo =
 * <q_j, o_k> (both from one product per query by the caller, scoring/tiered.py), qc =
 * <q_j, centre> (here, from the float16 centre; gains are read as float16 too), and
 * s(q, c) = sum_{j < r_q} max_{k < r_c} s_jk, float32 (no fast-math).
 *
 * AVX-512 build (chosen at run time when the CPU has AVX-512 F/BW/VL, `isa` < 0, or asked for,
 * `isa` 2; 0 is the portable build): 16 stored vectors a step, one a lane: up to 16 slots of a
 * tier of more than 8 used slots, or the (at most 8) used slots of a tier in two candidates side
 * by side. Axis t's code byte of the 16 slots is one masked 16-byte load (two for two
 * candidates), so codes need no gathers; its value comes from the axis's own table with one
 * permute (<= 5 bits), two permutes and a blend (6 bits) or a gather (7-8 bits); each tier's
 * axes are decoded variant by variant (a plan built once a call), so the loops do not branch.
 * The 16 lanes of values are then multiplied into 16 accumulators, one a query vector (its
 * coefficient broadcast). Work is split over plain pthreads, GIL released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_coded_threads.h"

#define MAX_TIERS 16
/* decoding variants of an axis: value by one permute (<= 5 bits), two (6) or a gather (7-8),
 * times whether its code runs into the next byte */
#define VARIANTS 6

/* one coded axis, as the AVX-512 loops decode it */
typedef struct {
    int32_t t;     /* its row in the decoded buffer and in qrot */
    int32_t lo;    /* offset of its first code byte in the tier block (for slot 0) */
    int32_t hi;    /* offset of the next byte (a crossing code only) */
    int32_t sh;    /* bit offset in the first byte */
    int32_t mask;  /* 2**bits - 1 */
    int32_t voff;  /* where its values start */
} axis_t;

typedef struct {
    float *out;              /* (nq, m) */
    const float *qrot;       /* (nq, RQ / 16, C, 16): tier g's axes at rows coff[g].. */
    const float *qo;         /* (nq, RQ, ks) */
    const float *qt;         /* (nq, RQ / 16, D, 16) the query vectors, one a lane */
    const uint16_t *centres; /* (N, D) float16 */
    const uint16_t *gains;   /* (N, ks) float16 */
    const int64_t *ids;      /* (nq, m) */
    const uint8_t *codes;    /* (N, W) */
    int64_t W, ks, nq, m, r_q, RQ, r_c, A, G, C, D;
    int64_t coff[MAX_TIERS];  /* first row of each tier's axes in qrot */
    int64_t base[MAX_TIERS];  /* byte offset of each tier's block in a row */
    int32_t start[MAX_TIERS + 1]; /* first slot of each tier; start[G] = ks */
    const int32_t *nact;     /* (G,) coded axes per tier (<= A) */
    const int32_t *pos;      /* (G, A) bit offsets in a slot */
    const int32_t *mask;     /* (G, A) (1 << bits) - 1 */
    const int32_t *voff;     /* (G, A) where each coded axis's values start in its tier's row */
    const float *vals;       /* (G, V) the values, axis after axis (2**bits each), 64 spare */
    int64_t V;
    const axis_t *plan;      /* (G, A): each tier's coded axes, grouped by variant */
    int32_t nvar[MAX_TIERS][VARIANTS]; /* axes of each variant */
    int64_t begin, end;
} job_t;

/* bits of an axis whose mask is 2**bits - 1 (bsf: no popcnt needed in the portable build) */
static inline int mask_bits(uint32_t mask) { return __builtin_ctz(mask + 1u); }

/* IEEE half -> float (subnormals, infinities and NaN included) */
static inline float half_to_float(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, f = h & 0x3ffu;
    uint32_t bits;
    if (e == 0x1fu) {
        bits = sign | 0x7f800000u | (f << 13);
    } else if (e) {
        bits = sign | ((e + 112u) << 23) | (f << 13);
    } else {
        const float v = (float)f * 5.9604644775390625e-08f; /* f * 2**-24 */
        return sign ? -v : v;
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

/* ---------------------------------------------------------------- portable build */
/* code of axis t (bit offset p, `bits` bits) of the slot whose byte 0 is at sp, bytes S apart */
static inline uint32_t code_at(const uint8_t *sp, int64_t S, int32_t p, uint32_t mask)
{
    uint32_t w = sp[(int64_t)(p >> 3) * S];
    if ((p & 7) + mask_bits(mask) > 8) w |= (uint32_t)sp[(int64_t)((p >> 3) + 1) * S] << 8;
    return (w >> (p & 7)) & mask;
}

static void range_generic(const job_t *jb, float *buf, float *best)
{
    const int64_t A = jb->A, RQ = jb->RQ, r_c = jb->r_c, nblk = RQ / 16, D = jb->D;
    float *mx = best, *qc = best + RQ;
    for (int64_t item = jb->begin; item < jb->end; item++) {
        const int64_t i = item / jb->m, id = jb->ids[item];
        const uint8_t *row = jb->codes + id * jb->W;
        const uint16_t *cen = jb->centres + id * D, *gains = jb->gains + id * jb->ks;
        for (int64_t j = 0; j < RQ; j++) {
            const float *q = jb->qt + ((i * nblk + j / 16) * D) * 16 + j % 16;
            float acc = 0.0f;
            for (int64_t d = 0; d < D; d++) acc += q[d * 16] * half_to_float(cen[d]);
            qc[j] = acc;
            mx[j] = -INFINITY;
        }
        for (int64_t k = 0; k < r_c; k++) {
            int g = 0;
            while (k >= jb->start[g + 1]) g++;
            const int64_t S = jb->start[g + 1] - jb->start[g];
            const uint8_t *sp = row + jb->base[g] + (k - jb->start[g]);
            const int32_t n = jb->nact[g];
            const int32_t *pos = jb->pos + g * A, *mask = jb->mask + g * A, *voff = jb->voff + g * A;
            const float *vals = jb->vals + (size_t)g * jb->V, gain = half_to_float(gains[k]);
            for (int32_t t = 0; t < n; t++)
                buf[t] = vals[voff[t] + (int32_t)code_at(sp, S, pos[t], (uint32_t)mask[t])];
            for (int64_t b = 0; b < nblk; b++) {
                const float *qt = jb->qrot + ((i * nblk + b) * jb->C + jb->coff[g]) * 16;
                float acc[16] = {0};
                for (int32_t t = 0; t < n; t++)
                    for (int l = 0; l < 16; l++) acc[l] += qt[t * 16 + l] * buf[t];
                for (int l = 0; l < 16 && b * 16 + l < jb->r_q; l++) {
                    const int64_t j = b * 16 + l;
                    const float s = jb->qo[(i * RQ + j) * jb->ks + k] + gain * acc[l];
                    if (s > mx[j]) mx[j] = s;
                }
            }
        }
        float total = 0.0f;
        for (int64_t j = 0; j < jb->r_q; j++) total += qc[j] + mx[j];
        jb->out[item] = total;
    }
}

/* ---------------------------------------------------------------- AVX-512 build */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX512 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

/* 16 lanes of stored vectors: lanes in m0 read candidate 0 (bytes b0[l + j * S], float16
 * gains g0[l], slot offsets qo[q0 + l]), lanes in m1 candidate 1 (b1, g1, q1). */
typedef struct {
    __mmask16 m0, m1;
    const uint8_t *b0, *b1;
    const uint16_t *g0, *g1;
    int64_t q0, q1;
} lanes_t;

AVX512 static inline __m512i bytes_at(const lanes_t *L, int64_t off)
{
    __m128i x = _mm_maskz_loadu_epi8(L->m0, L->b0 + off);
    if (L->m1) x = _mm_mask_loadu_epi8(x, L->m1, L->b1 + off);
    return _mm512_cvtepu8_epi32(x);
}

AVX512 static inline __m512 floats_at(__mmask16 m0, const float *p0, __mmask16 m1, const float *p1)
{
    __m512 x = _mm512_maskz_loadu_ps(m0, p0);
    return m1 ? _mm512_mask_loadu_ps(x, m1, p1) : x;
}

/* buf[t][lane] = the value of axis t of the lane's vector for the `cnt` axes of one variant
 * (constant arguments: the compiler writes one loop for each) */
AVX512 static inline __attribute__((always_inline)) void
decode_run(const axis_t *ax, int32_t cnt, const int two, const int cross, const int cls,
           __mmask16 m0, const uint8_t *b0, __mmask16 m1, const uint8_t *b1,
           const float *vals, float *buf)
{
    for (int32_t e = 0; e < cnt; e++) {
        const axis_t a = ax[e];
        __m128i x = _mm_maskz_loadu_epi8(m0, b0 + a.lo);
        if (two) x = _mm_mask_loadu_epi8(x, m1, b1 + a.lo);
        __m512i w = _mm512_cvtepu8_epi32(x);
        if (cross) {
            __m128i y = _mm_maskz_loadu_epi8(m0, b0 + a.hi);
            if (two) y = _mm_mask_loadu_epi8(y, m1, b1 + a.hi);
            w = _mm512_or_si512(w, _mm512_slli_epi32(_mm512_cvtepu8_epi32(y), 8));
        }
        const __m512i code = _mm512_and_si512(_mm512_srlv_epi32(w, _mm512_set1_epi32(a.sh)),
                                              _mm512_set1_epi32(a.mask));
        const float *tab = vals + a.voff;
        __m512 v;
        if (cls == 0) {
            v = _mm512_permutex2var_ps(_mm512_loadu_ps(tab), code, _mm512_loadu_ps(tab + 16));
        } else if (cls == 1) {
            const __m512 lo = _mm512_permutex2var_ps(_mm512_loadu_ps(tab), code,
                                                     _mm512_loadu_ps(tab + 16));
            const __m512 hi = _mm512_permutex2var_ps(_mm512_loadu_ps(tab + 32), code,
                                                     _mm512_loadu_ps(tab + 48));
            v = _mm512_mask_blend_ps(_mm512_test_epi32_mask(code, _mm512_set1_epi32(32)), lo, hi);
        } else {
            v = _mm512_i32gather_ps(code, tab, 4);
        }
        _mm512_store_ps(buf + (int64_t)a.t * 16, v);
    }
}

#define DECODE_ALL(TWO)                                                                           \
    do {                                                                                          \
        const axis_t *ax = plan;                                                                  \
        for (int v = 0; v < VARIANTS; v++) {                                                      \
            const int32_t cnt = nvar[v];                                                          \
            switch (v) {                                                                          \
            case 0: decode_run(ax, cnt, TWO, 0, 0, m0, b0, m1, b1, vals, buf); break;             \
            case 1: decode_run(ax, cnt, TWO, 1, 0, m0, b0, m1, b1, vals, buf); break;             \
            case 2: decode_run(ax, cnt, TWO, 0, 1, m0, b0, m1, b1, vals, buf); break;             \
            case 3: decode_run(ax, cnt, TWO, 1, 1, m0, b0, m1, b1, vals, buf); break;             \
            case 4: decode_run(ax, cnt, TWO, 0, 2, m0, b0, m1, b1, vals, buf); break;             \
            default: decode_run(ax, cnt, TWO, 1, 2, m0, b0, m1, b1, vals, buf); break;            \
            }                                                                                     \
            ax += cnt;                                                                            \
        }                                                                                         \
    } while (0)

/* buf[t][lane] = the value of axis t of the lane's vector, every coded axis of the tier */
AVX512 static void decode16(const lanes_t *L, const axis_t *plan, const int32_t *nvar,
                            const float *vals, float *buf)
{
    const __mmask16 m0 = L->m0, m1 = L->m1;
    const uint8_t *b0 = L->b0, *b1 = L->b1;
    if (m1) DECODE_ALL(1);
    else DECODE_ALL(0);
}

/* the lanes' scores for one query vector, <q, o_k> + gain * acc (qo: its row of slot offsets),
 * folded into its running maxima b0 (candidate 0's lanes) and b1 (candidate 1's) */
AVX512 static inline void fold_max(const lanes_t *L, const float *qo, __m512 gain, __m512 acc,
                                   float *b0, float *b1)
{
    const __m512 s = _mm512_add_ps(floats_at(L->m0, qo + L->q0, L->m1, qo + L->q1),
                                   _mm512_mul_ps(gain, acc));
    _mm512_store_ps(b0, _mm512_mask_max_ps(_mm512_load_ps(b0), L->m0, _mm512_load_ps(b0), s));
    if (L->m1)
        _mm512_store_ps(b1, _mm512_mask_max_ps(_mm512_load_ps(b1), L->m1, _mm512_load_ps(b1), s));
}

/* one step: the lanes' scores against every query vector, folded into the running maxima
 * best[c][j][lane] of the two candidates */
AVX512 static void step16(const job_t *jb, int64_t i, int g, const lanes_t *L, float *buf,
                          float *best)
{
    const int64_t A = jb->A, RQ = jb->RQ, nblk = RQ / 16;
    const int32_t n = jb->nact[g];
    decode16(L, jb->plan + g * A, jb->nvar[g], jb->vals + (size_t)g * jb->V, buf);
    __m256i gh = _mm256_maskz_loadu_epi16(L->m0, L->g0);
    if (L->m1) gh = _mm256_mask_loadu_epi16(gh, L->m1, L->g1);
    const __m512 gain = _mm512_cvtph_ps(gh);
    if (jb->r_q == 1) {
        /* one query vector (lane 0 of the block; e.g. repeated ones scored once): one dot
         * product per stored vector instead of 16, two accumulators for the FMA latency */
        const float *qq = jb->qrot + (i * nblk * jb->C + jb->coff[g]) * 16, *v = buf;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int32_t t = 0;
        for (; t + 1 < n; t += 2, v += 32, qq += 32) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(qq[0]), _mm512_load_ps(v), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(qq[16]), _mm512_load_ps(v + 16), a1);
        }
        if (t < n) a0 = _mm512_fmadd_ps(_mm512_set1_ps(qq[0]), _mm512_load_ps(v), a0);
        fold_max(L, jb->qo + i * RQ * jb->ks, gain, _mm512_add_ps(a0, a1), best, best + RQ * 16);
        return;
    }
    for (int64_t b = 0; b < nblk; b++) {
        const float *qt = jb->qrot + ((i * nblk + b) * jb->C + jb->coff[g]) * 16;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++) acc[l] = _mm512_setzero_ps();
        const float *v = buf, *qq = qt;
        for (int32_t t = 0; t < n; t++, v += 16, qq += 16) {
            const __m512 x = _mm512_load_ps(v);
#pragma GCC unroll 16
            for (int l = 0; l < 16; l++) acc[l] = _mm512_fmadd_ps(_mm512_set1_ps(qq[l]), x, acc[l]);
        }
#pragma GCC unroll 16
        for (int l = 0; l < 16; l++) {
            fold_max(L, jb->qo + (i * RQ + b * 16 + l) * jb->ks, gain, acc[l],
                     best + (b * 16 + l) * 16, best + (RQ + b * 16 + l) * 16);
        }
    }
}

/* qc[j] = <query vector j, centre> for j < RQ (cen: D floats of scratch) */
AVX512 static void centre_dots(const job_t *jb, int64_t i, const uint16_t *centre, float *cen,
                               float *qc)
{
    const int64_t D = jb->D, nblk = jb->RQ / 16;
    for (int64_t d = 0; d < D; d += 16) {
        const __mmask16 m = (__mmask16)(D - d >= 16 ? 0xffffu : (1u << (D - d)) - 1);
        _mm512_mask_storeu_ps(cen + d, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, centre + d)));
    }
    for (int64_t b = 0; b < nblk; b++) {
        const float *q = jb->qt + (i * nblk + b) * D * 16;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int64_t d = 0;
        for (; d + 1 < D; d += 2) {
            a0 = _mm512_fmadd_ps(_mm512_set1_ps(cen[d]), _mm512_loadu_ps(q + d * 16), a0);
            a1 = _mm512_fmadd_ps(_mm512_set1_ps(cen[d + 1]), _mm512_loadu_ps(q + d * 16 + 16), a1);
        }
        if (d < D) a0 = _mm512_fmadd_ps(_mm512_set1_ps(cen[d]), _mm512_loadu_ps(q + d * 16), a0);
        _mm512_storeu_ps(qc + b * 16, _mm512_add_ps(a0, a1));
    }
}

AVX512 static void range_avx512(const job_t *jb, float *buf, float *best)
{
    const int64_t RQ = jb->RQ, r_c = jb->r_c;
    float *qc = best + 2 * RQ * 16, *cen = qc + 2 * RQ;
    for (int64_t item = jb->begin; item < jb->end;) {
        const int64_t i = item / jb->m;
        const int two = item + 1 < jb->end && (item + 1) / jb->m == i;
        const int64_t id[2] = {jb->ids[item], jb->ids[item + two]};
        const uint8_t *row[2] = {jb->codes + id[0] * jb->W, jb->codes + id[1] * jb->W};
        const uint16_t *gains[2] = {jb->gains + id[0] * jb->ks, jb->gains + id[1] * jb->ks};
        for (int64_t x = 0; x < 2 * RQ * 16; x++) best[x] = -INFINITY;
        for (int g = 0; g < jb->G && jb->start[g] < r_c; g++) {
            const int64_t st = jb->start[g], S = jb->start[g + 1] - st;
            const int64_t used = (st + S < r_c ? st + S : r_c) - st;
            if (used <= 8) { /* the two candidates side by side: lanes 0-7 and 8-15 */
                const __mmask16 m = (__mmask16)((1u << used) - 1);
                const lanes_t L = {m, two ? (__mmask16)(m << 8) : 0,
                                   row[0] + jb->base[g], row[1] + jb->base[g] - 8,
                                   gains[0] + st, gains[1] + st - 8, st, st - 8};
                step16(jb, i, g, &L, buf, best);
                continue;
            }
            for (int c = 0; c <= two; c++) {
                for (int64_t s0 = 0; s0 < used; s0 += 16) {
                    const int64_t w = used - s0 < 16 ? used - s0 : 16;
                    const __mmask16 m = (__mmask16)((1u << w) - 1);
                    const uint8_t *bp = row[c] + jb->base[g] + s0;
                    const uint16_t *gp = gains[c] + st + s0;
                    const lanes_t L = {c ? 0 : m, c ? m : 0, bp, bp, gp, gp, st + s0, st + s0};
                    step16(jb, i, g, &L, buf, best);
                }
            }
        }
        for (int c = 0; c <= two; c++) {
            centre_dots(jb, i, jb->centres + id[c] * jb->D, cen, qc);
            float total = 0.0f;
            for (int64_t j = 0; j < jb->r_q; j++)
                total += qc[j] + _mm512_reduce_max_ps(_mm512_load_ps(best + (c * RQ + j) * 16));
            jb->out[item + c] = total;
        }
        item += 1 + two;
    }
}
#endif

static int best_isa(void)
{
#ifdef HAVE_AVX512
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512vl"))
        return 2;
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
    /* decoded values (A x 16 floats), the running maxima (2 x RQ x 16), the centre dots
     * (2 x RQ) and one centre in float32 (D, rounded up to 16) */
    float *buf = NULL;
    const size_t floats = (size_t)tk->jb.A * 16 + 2 * (size_t)tk->jb.RQ * 17 +
                          ((size_t)tk->jb.D + 15) / 16 * 16;
    if (posix_memalign((void **)&buf, 64, floats * sizeof(float)) != 0) {
        tk->oom = 1;
        return NULL;
    }
    float *best = buf + (size_t)tk->jb.A * 16;
#ifdef HAVE_AVX512
    if (tk->isa == 2) range_avx512(&tk->jb, buf, best);
    else range_generic(&tk->jb, buf, best);
#else
    range_generic(&tk->jb, buf, best);
#endif
    free(buf);
    return NULL;
}

static PyObject *score(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out, qrot, qo, qt, centres, gains, ids, codes, slot_offset, slot_group,
        nact, coff, pos, mask, voff, vals;
    long long nq, m, r_q, RQ, r_c, A, G, C, D, W, ks, nrows, V;
    int threads, isa;
    if (!PyArg_ParseTuple(args, "KKKKKKKKLLLLLLLLLLLLKKKKKKKKLii", &out, &qrot, &qo, &qt,
                          &centres, &gains, &ids, &codes, &nq, &m, &r_q, &RQ, &r_c, &A, &G,
                          &C, &D, &W, &ks, &nrows, &slot_offset, &slot_group, &nact, &coff,
                          &pos, &mask, &voff, &vals, &V, &threads, &isa))
        return NULL;
    if (RQ > 256 || RQ % 16 || r_q > RQ || A % 16 || G < 1 || G > MAX_TIERS || r_c > ks) {
        PyErr_SetString(PyExc_ValueError, "tiered kernel: r_q <= RQ <= 256, RQ and A multiples "
                                          "of 16, 1 to 16 tiers, r_c <= stored vectors");
        return NULL;
    }
    job_t jb = {
        .out = (float *)(uintptr_t)out, .qrot = (const float *)(uintptr_t)qrot,
        .qo = (const float *)(uintptr_t)qo, .qt = (const float *)(uintptr_t)qt,
        .centres = (const uint16_t *)(uintptr_t)centres,
        .gains = (const uint16_t *)(uintptr_t)gains, .ids = (const int64_t *)(uintptr_t)ids,
        .codes = (const uint8_t *)(uintptr_t)codes, .W = W, .ks = ks, .nq = nq, .m = m,
        .r_q = r_q, .RQ = RQ, .r_c = r_c, .A = A, .G = G, .C = C, .D = D,
        .nact = (const int32_t *)(uintptr_t)nact, .pos = (const int32_t *)(uintptr_t)pos,
        .mask = (const int32_t *)(uintptr_t)mask, .voff = (const int32_t *)(uintptr_t)voff,
        .vals = (const float *)(uintptr_t)vals, .V = V,
    };
    /* tiers: consecutive slots of one group each, in order */
    for (int64_t g = 0; g < G; g++) jb.coff[g] = ((const int32_t *)(uintptr_t)coff)[g];
    const int32_t *grp = (const int32_t *)(uintptr_t)slot_group;
    const int64_t *soff = (const int64_t *)(uintptr_t)slot_offset;
    for (int64_t k = 0, g = -1; k <= ks; k++) {
        const int64_t gk = k < ks ? grp[k] : G;
        if (gk == g) continue;
        if (gk != g + 1) {
            PyErr_SetString(PyExc_ValueError, "tiered kernel: tiers must be consecutive slots");
            return NULL;
        }
        g = gk;
        jb.start[g] = (int32_t)k;
        if (g < G) jb.base[g] = soff[k];
    }
    /* the decoding plan: each tier's coded axes grouped by variant */
    axis_t *plan = (axis_t *)malloc(sizeof(axis_t) * (size_t)(G * A > 0 ? G * A : 1));
    if (!plan) return PyErr_NoMemory();
    for (int64_t g = 0; g < G; g++) {
        const int64_t S = jb.start[g + 1] - jb.start[g];
        const int32_t n = jb.nact[g];
        axis_t *out = plan + g * A;
        int32_t e = 0;
        for (int v = 0; v < VARIANTS; v++) {
            int32_t cnt = 0;
            for (int32_t t = 0; t < n; t++) {
                const int32_t p = jb.pos[g * A + t], mk = jb.mask[g * A + t];
                const int bits = mask_bits((uint32_t)mk);
                const int cls = bits <= 5 ? 0 : bits == 6 ? 1 : 2;
                const int cross = (p & 7) + bits > 8;
                if (2 * cls + cross != v) continue;
                out[e++] = (axis_t){t, (int32_t)((p >> 3) * S), (int32_t)(((p >> 3) + 1) * S),
                                    p & 7, mk, jb.voff[g * A + t]};
                cnt++;
            }
            jb.nvar[g][v] = cnt;
        }
    }
    jb.plan = plan;
    const int64_t items = nq * m;
    if (coded_ids_in_range(jb.ids, items, nrows) < 0) {
        free(plan);
        return NULL;
    }
    const int best = best_isa();
    if (isa < 0) isa = best;
    if (isa > best || isa == 1) {
        PyErr_Format(PyExc_RuntimeError,
                     "instruction set %d is not built for the tiered kernel on this CPU", isa);
        free(plan);
        return NULL;
    }
    threads = coded_threads(threads, items);
    task_t tasks[CODED_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        tasks[t].jb = jb;
        tasks[t].jb.begin = items * t / threads;
        tasks[t].jb.end = items * (t + 1) / threads;
        tasks[t].isa = isa;
        tasks[t].oom = 0;
    }
    coded_run(worker, tasks, sizeof(task_t), threads);
    free(plan);
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
