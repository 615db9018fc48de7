/*
 * metaembed_rag.scoring._residual: budgeted MaxSim on coded candidates, residual-compressed
 * (`score`) or int8 (`score_int8`: v[d] = float(row[d]) * scale, as VectorCodec.decode).
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
 * fast-math. Nothing larger than one candidate is ever decoded, and the next vector's centroid
 * and the next candidate's first bytes are prefetched while one decodes.
 *
 * Instruction set: AVX-512 (4 query vectors x 4 decoded vectors a step) or AVX2+FMA (2 x 4)
 * builds of the loops are chosen at run time when the CPU has them, otherwise a portable one;
 * `isa` (>= 0) asks for one (METAEMBED_RAG_MAXSIM_ISA, as the float kernel). Work is split over
 * plain pthreads; the GIL is released.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_coded_threads.h"

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
    const float *planes;        /* (2**nbits, D): bucket value of every code, or NULL */
    const int8_t *i8;           /* int8 rows (N, Ks, D) instead of residual codes, or NULL */
    const float *scales;        /* (N, Ks) their scales */
    int normalize;              /* rescale decoded vectors to unit length */
    int64_t begin, end;         /* work items [begin, end) of this thread */
    int isa;                    /* 0 generic, 1 AVX2+FMA, 2 AVX-512 */
    int bad_id;                 /* set when a centroid id or row is out of range */
} job_t;

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4)));
typedef float v16 __attribute__((vector_size(64)));
typedef float v16u __attribute__((vector_size(64), aligned(4)));

#define DECODE_LOOP(G)                                                                            \
    for (int64_t p = 0; p < jb->P; p++) {                                                         \
        const float *t = tab + ((size_t)p * 256 + pk[p]) * (G);                                   \
        const float *c = cent + p * (G);                                                          \
        float *o = out + p * (G);                                                                 \
        for (int e = 0; e < (G); e++) o[e] = c[e] + t[e];                                         \
    }

/* The scoring loops for one instruction set: VT / VTU the vector type (W floats; VTU unaligned),
 * QB the query vectors scored together against 4 decoded vectors (QB x 4 accumulators: 2 with 16
 * registers, 4 with AVX-512's 32). Every dot product is the same lane-wise FMA chain over
 * D - D % W dimensions, then a pairwise lane sum, then the scalar tail, whichever loop runs it. */
#define DEFINE_SCORE(SFX, VT, VTU, W, QB, HSUM, FAST_DECODE, FAST_BLOCK)                         \
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
    static inline float hsum##SFX(VT acc) { return HSUM(acc); }                                   \
                                                                                                  \
    static float dot##SFX(const float *a, const float *b, int64_t D)                              \
    {                                                                                             \
        VT acc = {0};                                                                             \
        int64_t d = 0;                                                                            \
        for (; d + W <= D; d += W) acc += *(const VTU *)(a + d) * *(const VTU *)(b + d);          \
        float s = hsum##SFX(acc);                                                                 \
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
    /* decode one vector into out; its 1 / |v| into *inv when jb->normalize */                   \
    static void decode_scaled##SFX(const job_t *jb, const uint8_t *pk, const float *cent,         \
                                   float *out, float *inv)                                        \
    {                                                                                             \
        float len2;                                                                               \
        if (FAST_DECODE(jb, pk, cent, out, &len2)) {                                              \
            if (jb->normalize) *inv = len2 > 0.0f ? 1.0f / sqrtf(len2) : 1.0f;                    \
            return;                                                                               \
        }                                                                                         \
        decode_one##SFX(jb, pk, cent, out);                                                       \
        if (jb->normalize) *inv = inv_len##SFX(out, jb->D);                                       \
    }                                                                                             \
                                                                                                  \
    /* best[i] = max(best[i], <q_i, b_j> * inv[j]) for 4 decoded vectors b, QB queries at once */ \
    static void block4##SFX(const float *q, int64_t r_q, const float *b, int64_t D,               \
                            const float *inv, float *best)                                        \
    {                                                                                             \
        const float *bj[4] = {b, b + D, b + 2 * D, b + 3 * D};                                    \
        const int64_t DW = D - D % W;                                                             \
        int64_t i = FAST_BLOCK(q, r_q, b, D, inv, best); /* query vectors done already */         \
        for (; i + QB <= r_q; i += QB) {                                                          \
            VT acc[QB][4];                                                                        \
            _Pragma("GCC unroll 4") for (int r = 0; r < QB; r++)                                  \
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[r][j] = (VT){0};          \
            for (int64_t d = 0; d < DW; d += W) {                                                 \
                VT x[4];                                                                          \
                _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) x[j] = *(const VTU *)(bj[j] + d); \
                _Pragma("GCC unroll 4") for (int r = 0; r < QB; r++) {                            \
                    const VT y = *(const VTU *)(q + (i + r) * D + d);                             \
                    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) acc[r][j] += y * x[j];    \
                }                                                                                 \
            }                                                                                     \
            for (int r = 0; r < QB; r++) {                                                        \
                const float *qi = q + (i + r) * D;                                                \
                float m = best[i + r];                                                            \
                for (int j = 0; j < 4; j++) {                                                     \
                    float s = hsum##SFX(acc[r][j]);                                               \
                    for (int64_t d = DW; d < D; d++) s += qi[d] * bj[j][d];                       \
                    s *= inv[j];                                                                  \
                    if (s > m) m = s;                                                             \
                }                                                                                 \
                best[i + r] = m;                                                                  \
            }                                                                                     \
        }                                                                                         \
        for (; i < r_q; i++) {                                                                    \
            float m = best[i];                                                                    \
            for (int j = 0; j < 4; j++) {                                                         \
                const float s = dot##SFX(q + i * D, bj[j], D) * inv[j];                           \
                if (s > m) m = s;                                                                 \
            }                                                                                     \
            best[i] = m;                                                                          \
        }                                                                                         \
    }                                                                                             \
                                                                                                  \
    /* vector jv of stored row `row` into out (1 / |v| into *inv when normalizing); 0 when its  \
     * centroid id is out of range */                                                             \
    static int decode_vector##SFX(const job_t *jb, int64_t row, int64_t jv, float *out,           \
                                  float *inv)                                                     \
    {                                                                                             \
        const int64_t D = jb->D, at = row * jb->ks + jv;                                          \
        if (jb->i8 != NULL) { /* int8 rows: q * scale, as VectorCodec.decode */                   \
            const int8_t *src = jb->i8 + (size_t)at * D;                                          \
            const float sc = jb->scales[at];                                                      \
            for (int64_t d = 0; d < D; d++) out[d] = (float)src[d] * sc;                          \
            return 1;                                                                             \
        }                                                                                         \
        const uint16_t *cid = jb->cid + (size_t)at;                                               \
        if (cid[0] >= jb->ncent) return 0;                                                        \
        if (jv + 1 < jb->r_c && cid[1] < jb->ncent) {                                             \
            /* the next vector's centroid, while this one decodes */                              \
            const char *nc = (const char *)(jb->centroids + (size_t)cid[1] * D);                  \
            for (int64_t o = 0; o < D * 4; o += 64) __builtin_prefetch(nc + o);                   \
        }                                                                                         \
        decode_scaled##SFX(jb, jb->packed + (size_t)at * jb->P,                                   \
                           jb->centroids + (size_t)cid[0] * D, out, inv);                         \
        return 1;                                                                                 \
    }                                                                                             \
                                                                                                  \
    static void run##SFX(job_t *jb, float *buf)                                                   \
    {                                                                                             \
        const int64_t D = jb->D, r_c = jb->r_c, r_q = jb->r_q;                                    \
        float best[256], inv[4] = {1.0f, 1.0f, 1.0f, 1.0f};                                       \
        for (int64_t p = jb->begin; p < jb->end; p++) {                                           \
            const int64_t qi = p / jb->m;                                                         \
            const int64_t row = jb->ids[p];                                                       \
            const float *q = jb->q + (size_t)qi * r_q * D;                                        \
            for (int64_t i = 0; i < r_q; i++) best[i] = -__builtin_inff();                        \
            if (p + 1 < jb->end) { /* the next candidate's first stored bytes */                 \
                const size_t nxt = (size_t)jb->ids[p + 1] * jb->ks;                               \
                if (jb->i8 != NULL) {                                                             \
                    __builtin_prefetch(jb->i8 + nxt * D);                                         \
                } else {                                                                          \
                    __builtin_prefetch(jb->cid + nxt);                                            \
                    __builtin_prefetch(jb->packed + nxt * jb->P);                                 \
                }                                                                                 \
            }                                                                                     \
            for (int64_t j0 = 0; j0 < r_c; j0 += 4) {                                             \
                const int64_t nj = r_c - j0 < 4 ? r_c - j0 : 4;                                   \
                for (int64_t j = 0; j < nj; j++)                                                  \
                    if (!decode_vector##SFX(jb, row, j0 + j, buf + j * D, inv + j)) {             \
                        jb->bad_id = 1;                                                           \
                        return;                                                                   \
                    }                                                                             \
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

#define NO_FAST_DECODE(jb, pk, cent, out, len2) 0
#define NO_FAST_BLOCK(q, r_q, b, D, inv, best) 0

/* the lane sum of 8 floats, pairwise: ((0+4) + (1+5)) + ((2+6) + (3+7)) */
static inline float hsum8(v8 acc)
{
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

DEFINE_SCORE(_generic, v8, v8u, 8, 2, hsum8, NO_FAST_DECODE, NO_FAST_BLOCK)

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_AVX2 1
#include <immintrin.h>
#pragma GCC push_options
#pragma GCC target("avx2,fma")
DEFINE_SCORE(_avx2, v8, v8u, 8, 2, hsum8, NO_FAST_DECODE, NO_FAST_BLOCK)
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,bmi2,avx2,fma")
/* 16 dimensions a step: the codes' bit planes become lane masks (2 bits: pext of the even and
 * odd bits of 4 bytes; 4 bits: of every fourth bit of 8 bytes) that select each lane's bucket
 * value from the planes (4 bits: among 16, in four levels of blends); then the centroid is
 * added, v = c + w, the same float32 addition as the byte table's. Returns 0 (use the byte
 * table) when D is not a multiple of 16. */
static int fast_decode_avx512(const job_t *jb, const uint8_t *pk, const float *cent, float *out,
                              float *len2)
{
    const int64_t D = jb->D;
    const float *w = jb->planes;
    if (w == NULL || D % 16) return 0;
    __m512 sq = _mm512_setzero_ps();
    if (jb->g == 8) {
        for (int64_t d = 0; d < D; d += 16) {
            uint16_t bits;
            memcpy(&bits, pk + d / 8, 2);
            const __m512 v = _mm512_mask_blend_ps((__mmask16)bits, _mm512_loadu_ps(w + d),
                                                  _mm512_loadu_ps(w + D + d));
            const __m512 x = _mm512_add_ps(_mm512_loadu_ps(cent + d), v);
            _mm512_storeu_ps(out + d, x);
            sq = _mm512_fmadd_ps(x, x, sq);
        }
        *len2 = _mm512_reduce_add_ps(sq);
        return 1;
    }
    if (jb->g == 4) {
        for (int64_t d = 0; d < D; d += 16) {
            uint32_t bits;
            memcpy(&bits, pk + d / 4, 4);
            const __mmask16 lo = (__mmask16)_pext_u32(bits, 0x55555555u);
            const __mmask16 hi = (__mmask16)_pext_u32(bits, 0xAAAAAAAAu);
            const __m512 v01 = _mm512_mask_blend_ps(lo, _mm512_loadu_ps(w + d),
                                                    _mm512_loadu_ps(w + D + d));
            const __m512 v23 = _mm512_mask_blend_ps(lo, _mm512_loadu_ps(w + 2 * D + d),
                                                    _mm512_loadu_ps(w + 3 * D + d));
            const __m512 v = _mm512_mask_blend_ps(hi, v01, v23);
            const __m512 x = _mm512_add_ps(_mm512_loadu_ps(cent + d), v);
            _mm512_storeu_ps(out + d, x);
            sq = _mm512_fmadd_ps(x, x, sq);
        }
        *len2 = _mm512_reduce_add_ps(sq);
        return 1;
    }
    if (jb->g == 2) { /* 4 bits: a 16-way select, one bit plane a level (15 blends) */
        for (int64_t d = 0; d < D; d += 16) {
            uint64_t bits;
            memcpy(&bits, pk + d / 2, 8);
            __m512 v[16];
            for (int c = 0; c < 16; c++) v[c] = _mm512_loadu_ps(w + c * D + d);
            for (int level = 0, n = 16; level < 4; level++, n /= 2) {
                const __mmask16 k =
                    (__mmask16)_pext_u64(bits, 0x1111111111111111ull << level);
                for (int c = 0; c < n / 2; c++) v[c] = _mm512_mask_blend_ps(k, v[2 * c], v[2 * c + 1]);
            }
            const __m512 x = _mm512_add_ps(_mm512_loadu_ps(cent + d), v[0]);
            _mm512_storeu_ps(out + d, x);
            sq = _mm512_fmadd_ps(x, x, sq);
        }
        *len2 = _mm512_reduce_add_ps(sq);
        return 1;
    }
    return 0;
}
/* Query vectors 4 at a time against 4 decoded vectors: 16 accumulators, then one transposing
 * reduction of all 16 (shuffles of 256- and 128-bit halves and of lane pairs, 15 additions)
 * into e[4 * j + r] = <q_r, b_j>, scaled by inv[j]; the max over j is the max of e's four
 * 128-bit lanes. The dimensions past the last multiple of 16 are added per pair before the
 * scaling. Returns how many query vectors it scored (a multiple of 4). */
static int64_t block4x4_avx512(const float *q, int64_t r_q, const float *b, int64_t D,
                               const float *inv, float *best)
{
    const int64_t D16 = D - D % 16;
    const __m512 scale = _mm512_set_ps(inv[3], inv[3], inv[3], inv[3], inv[2], inv[2], inv[2],
                                       inv[2], inv[1], inv[1], inv[1], inv[1], inv[0], inv[0],
                                       inv[0], inv[0]);
    int64_t i = 0;
    for (; i + 4 <= r_q; i += 4) {
        const float *q0 = q + i * D, *q1 = q0 + D, *q2 = q1 + D, *q3 = q2 + D;
        __m512 a[16];
        for (int k = 0; k < 16; k++) a[k] = _mm512_setzero_ps();
        for (int64_t d = 0; d < D16; d += 16) {
            const __m512 x0 = _mm512_loadu_ps(b + d), x1 = _mm512_loadu_ps(b + D + d);
            const __m512 x2 = _mm512_loadu_ps(b + 2 * D + d), x3 = _mm512_loadu_ps(b + 3 * D + d);
            const float *qs[4] = {q0, q1, q2, q3};
            for (int r = 0; r < 4; r++) { /* a[4 r + j] += q_r * b_j */
                const __m512 y = _mm512_loadu_ps(qs[r] + d);
                a[4 * r + 0] = _mm512_fmadd_ps(y, x0, a[4 * r + 0]);
                a[4 * r + 1] = _mm512_fmadd_ps(y, x1, a[4 * r + 1]);
                a[4 * r + 2] = _mm512_fmadd_ps(y, x2, a[4 * r + 2]);
                a[4 * r + 3] = _mm512_fmadd_ps(y, x3, a[4 * r + 3]);
            }
        }
        __m512 h[8], c[4], e2[2];
        for (int k = 0; k < 8; k++) /* [A.q0+A.q2, A.q1+A.q3, B.q0+B.q2, B.q1+B.q3] */
            h[k] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0x44),
                                 _mm512_shuffle_f32x4(a[2 * k], a[2 * k + 1], 0xEE));
        for (int k = 0; k < 4; k++) /* quarter j: 4 partial sums of a[4 k + j] */
            c[k] = _mm512_add_ps(_mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], 0x88),
                                 _mm512_shuffle_f32x4(h[2 * k], h[2 * k + 1], 0xDD));
        for (int k = 0; k < 2; k++) /* lane j: 2 partials of a[8 k + j], 2 of a[8 k + 4 + j] */
            e2[k] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0x44),
                                  _mm512_shuffle_ps(c[2 * k], c[2 * k + 1], 0xEE));
        /* element 4 j + p: the sum of a[4 p + j] = <q_p, b_j> */
        __m512 e = _mm512_add_ps(_mm512_shuffle_ps(e2[0], e2[1], 0x88),
                                 _mm512_shuffle_ps(e2[0], e2[1], 0xDD));
        if (D16 < D) {
            float t[16];
            for (int j = 0; j < 4; j++)
                for (int r = 0; r < 4; r++) {
                    float s = 0.0f;
                    for (int64_t d = D16; d < D; d++) s += q[(i + r) * D + d] * b[j * D + d];
                    t[4 * j + r] = s;
                }
            e = _mm512_add_ps(e, _mm512_loadu_ps(t));
        }
        e = _mm512_mul_ps(e, scale);
        const __m128 m01 = _mm_max_ps(_mm512_extractf32x4_ps(e, 0), _mm512_extractf32x4_ps(e, 1));
        const __m128 m23 = _mm_max_ps(_mm512_extractf32x4_ps(e, 2), _mm512_extractf32x4_ps(e, 3));
        _mm_storeu_ps(best + i, _mm_max_ps(_mm_loadu_ps(best + i), _mm_max_ps(m01, m23)));
    }
    return i;
}
#define HSUM16(acc) _mm512_reduce_add_ps((__m512)(acc))
DEFINE_SCORE(_avx512, v16, v16u, 16, 4, HSUM16, fast_decode_avx512, block4x4_avx512)
#pragma GCC pop_options
#endif

/* 2 AVX-512, 1 AVX2+FMA, 0 portable: the fastest build of the loops this CPU runs */
static int best_isa(void)
{
#ifdef HAVE_AVX2
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("bmi2") &&
        __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

static void *worker(void *arg)
{
    job_t *jb = (job_t *)arg;
    float *buf = (float *)malloc(sizeof(float) * (size_t)(jb->r_c * jb->D + 8));
    if (!buf) { jb->bad_id = 2; return NULL; }
#ifdef HAVE_AVX2
    if (jb->isa == 2) run_avx512(jb, buf);
    else if (jb->isa == 1) run_avx2(jb, buf);
    else run_generic(jb, buf);
#else
    run_generic(jb, buf);
#endif
    free(buf);
    return NULL;
}

/* Score `tmpl` (every field but the work range and ISA set) over nq * m items on `threads`
 * threads with instruction set `isa` (< 0: the best); ids checked against nrows first. */
static PyObject *run_jobs(const job_t *tmpl, long long nrows, int threads, int isa)
{
    if (tmpl->r_q > 256) {
        PyErr_SetString(PyExc_ValueError, "the coded-row kernel takes at most 256 query vectors");
        return NULL;
    }
    const int64_t items = tmpl->nq * tmpl->m;
    if (coded_ids_in_range(tmpl->ids, items, nrows) < 0) return NULL;
    threads = coded_threads(threads, items);
    const int best = best_isa();
    if (isa < 0) isa = best;
    if (isa > best) {
        PyErr_Format(PyExc_RuntimeError, "instruction set %d is not supported by this CPU", isa);
        return NULL;
    }
    const int64_t D = tmpl->D;
    const int g = tmpl->g;
    /* the AVX-512 decoding reads bucket values by code: planes[b][d] is the
     * table's value for dimension d in a byte whose every field holds code b */
    float *planes = NULL;
    if (tmpl->i8 == NULL && isa == 2 && (g == 8 || g == 4 || g == 2) && D % 16 == 0) {
        const int levels = 1 << (8 / g), rep = g == 8 ? 0xFF : g == 4 ? 0x55 : 0x11;
        planes = (float *)malloc(sizeof(float) * (size_t)(levels * D));
        if (!planes) return PyErr_NoMemory();
        for (int b = 0; b < levels; b++)
            for (int64_t d = 0; d < D; d++)
                planes[b * D + d] =
                    tmpl->table[((size_t)(d / g) * 256 + (size_t)(b * rep)) * g + d % g];
    }
    job_t jobs[CODED_MAX_THREADS];
    for (int t = 0; t < threads; t++) {
        jobs[t] = *tmpl;
        jobs[t].planes = planes;
        jobs[t].begin = items * t / threads;
        jobs[t].end = items * (t + 1) / threads;
        jobs[t].isa = isa;
        jobs[t].bad_id = 0;
    }
    coded_run(worker, jobs, sizeof(job_t), threads);
    free(planes);
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

/* the fields both row kinds share: outputs, queries, sizes, candidate ids */
static void job_init(job_t *jb, unsigned long long out, long long nq, long long m,
                     unsigned long long q, long long r_q, long long D, long long r_c,
                     unsigned long long ids, long long ks)
{
    memset(jb, 0, sizeof *jb);
    jb->out = (float *)(uintptr_t)out;
    jb->q = (const float *)(uintptr_t)q;
    jb->nq = nq; jb->m = m; jb->r_q = r_q; jb->D = D; jb->r_c = r_c;
    jb->ids = (const int64_t *)(uintptr_t)ids;
    jb->ks = ks;
}

static PyObject *score(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out, q, ids, cid, packed, cent, table;
    long long nq, m, r_q, D, r_c, ks, P, ncent, nrows;
    int g, threads, isa, normalize;
    if (!PyArg_ParseTuple(args, "KLLKLLLKLKKLLKLKiiii", &out, &nq, &m, &q, &r_q, &D, &r_c, &ids,
                          &nrows, &cid, &packed, &ks, &P, &cent, &ncent, &table, &g, &threads,
                          &isa, &normalize))
        return NULL;
    job_t jb;
    job_init(&jb, out, nq, m, q, r_q, D, r_c, ids, ks);
    jb.cid = (const uint16_t *)(uintptr_t)cid;
    jb.packed = (const uint8_t *)(uintptr_t)packed;
    jb.P = P;
    jb.centroids = (const float *)(uintptr_t)cent;
    jb.ncent = ncent;
    jb.table = (const float *)(uintptr_t)table;
    jb.g = g;
    jb.normalize = normalize;
    return run_jobs(&jb, nrows, threads, isa);
}

static PyObject *score_int8(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out, q, ids, rows, scales;
    long long nq, m, r_q, D, r_c, ks, nrows;
    int threads, isa;
    if (!PyArg_ParseTuple(args, "KLLKLLLKLKKLii", &out, &nq, &m, &q, &r_q, &D, &r_c, &ids, &nrows,
                          &rows, &scales, &ks, &threads, &isa))
        return NULL;
    job_t jb;
    job_init(&jb, out, nq, m, q, r_q, D, r_c, ids, ks);
    jb.i8 = (const int8_t *)(uintptr_t)rows;
    jb.scales = (const float *)(uintptr_t)scales;
    return run_jobs(&jb, nrows, threads, isa);
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs)
{
    (void)self; (void)noargs;
    return PyLong_FromLong(best_isa());
}

static PyMethodDef methods[] = {
    {"score", score, METH_VARARGS, "MaxSim of queries against residual-coded candidates."},
    {"score_int8", score_int8, METH_VARARGS, "MaxSim of queries against int8 candidates."},
    {"best_isa", py_best_isa, METH_NOARGS,
     "The fastest path this CPU runs: 0 generic, 1 AVX2+FMA, 2 AVX-512."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_residual", NULL, -1, methods,
                                    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__residual(void) { return PyModule_Create(&module); }
