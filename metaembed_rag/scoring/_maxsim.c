/*
 * metaembed_rag.scoring._maxsim: fused budgeted MaxSim for the CPU.
 *
 * s(q, c) = sum_{i < r_q} max_{j < r_c} <q_i, c_j>, documents in their natural (N, Kc, D)
 * layout stored as float32, float16 or bfloat16 (converted exactly to float32; all arithmetic
 * is float32 with fused multiply-add, no fast-math).
 *
 * The instruction set is chosen at run time (AVX-512F, AVX2+FMA+F16C, or a portable
 * auto-vectorised path), so one build runs on any x86-64 CPU; no -march=native.
 * The GIL is released and the work is split over plain pthreads (no OpenMP runtime, so nothing
 * clashes with the libgomp bundled with torch).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2 };
enum { MODE_FULL = 0, MODE_PAIR = 1, MODE_IDS = 2 };
enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };

typedef struct {
    float *out;
    int64_t out_s0, out_s1;     /* output strides (elements) */
    const float *qt;            /* packed queries (nq, nqb, D, VW) */
    int64_t nq, nqb;
    const char *d;              /* documents base pointer */
    int dtype;
    int64_t esz;                /* bytes per document element */
    int64_t d_s0, d_s1;         /* candidate stride, vector stride (elements) */
    int64_t r_q, r_c, D;
    int mode;
    const int64_t *ids;
    int64_t ids_s0, ids_s1;
    int64_t m;                  /* candidates per query (full mode: N) */
    int64_t pair_s0;            /* pairwise mode: stride between queries' candidate lists */
    int64_t qchunk;             /* full mode: queries processed per pass over candidates */
    int maxj;                   /* largest candidate-vector group staged at once */
    int64_t pf_ahead;           /* software-prefetch distance, in candidates */
    int64_t g2_db;              /* AVX-512 pair path: 16-dim blocks staged (bf16: even) */
    int g2_bf16;                /* AVX-512 pair path: bf16 staged by g2_stage_bf16 */
    const void *pack;           /* direct path: the packed query (dr_pack_t) */
} job_t;


/* Software prefetch of a candidate's prefix (the hardware prefetcher does not cross the gaps
 * between prefixes when r_c < Kc, nor follow gathered ids). */

static inline void prefetch_rows(const job_t *jb, const char *doc, int64_t j0, int64_t n)
{
    const size_t vbytes = (size_t)(jb->d_s1 * jb->esz), rbytes = (size_t)(jb->D * jb->esz);
    for (int64_t j = j0; j < j0 + n; j++) {
        const char *row = doc + (size_t)j * vbytes;
        for (size_t off = 0; off < rbytes; off += 64) __builtin_prefetch(row + off, 0, 2);
    }
}

static inline void prefetch_prefix(const job_t *jb, const char *doc)
{
    prefetch_rows(jb, doc, 0, jb->r_c);
}

/* Software-prefetch distance in candidates: about `bytes` of prefixes ahead, `min` to 16
 * candidates (METAEMBED_RAG_MAXSIM_PREFETCH overrides it; 0 = off). Callers that pass
 * MODE_FULL: a full-mode pass over whole, adjacent candidates is one linear stream that the
 * hardware prefetcher follows, so software prefetch is off there (it cost 10-20% at (16,64) on
 * the staged paths when measured). */
static int64_t prefetch_distance_bytes(int mode, int64_t r_c, int64_t D, int64_t esz,
                                       int64_t d_s0, int64_t d_s1, int64_t bytes, int64_t min)
{
    int64_t ahead = bytes / (r_c * D * esz);
    if (ahead < min) ahead = min;
    if (ahead > 16) ahead = 16;
    if (mode == MODE_FULL && d_s1 == D && d_s0 == r_c * D) ahead = (int64_t)1 << 62;
    const char *env = getenv("METAEMBED_RAG_MAXSIM_PREFETCH"); /* tuning knob */
    if (env) ahead = atoi(env) > 0 ? atoi(env) : (int64_t)1 << 62;
    return ahead;
}

/* Staged and direct paths: ~32 KiB ahead, at least 2 candidates. */
static int64_t prefetch_distance(int mode, int64_t r_c, int64_t D, int64_t esz, int64_t d_s0,
                                 int64_t d_s1)
{
    return prefetch_distance_bytes(mode, r_c, D, esz, d_s0, d_s1, 32768, 2);
}

/* Document of work item p in pairwise / ids mode. */
static inline const char *item_ptr(const job_t *jb, int64_t p)
{
    const int64_t qi = p / jb->m, k = p % jb->m;
    int64_t row;
    if (jb->mode == MODE_IDS)
        row = jb->ids[qi * jb->ids_s0 + k * jb->ids_s1] * jb->d_s0;
    else
        row = qi * jb->pair_s0 + k * jb->d_s0;
    return jb->d + (size_t)(row * jb->esz);
}

/* ------------------------------------------------------------------------------------------ */
/* Portable scalar conversions.                                                                */

static inline float bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* AVX-512 pair path with bf16 storage: staged position of dim d (see g2_stage). Within a
 * 32-dim block, position s = 8k + m holds dim 8(m / 2) + 2k + m % 2. */
static inline int64_t g2_bf16_pos(int64_t d)
{
    const int64_t r = d % 32, lane = r / 8, k = (r % 8) / 2, e = r % 2;
    return d - r + 8 * k + 2 * lane + e;
}

static inline float f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while ((mant & 0x400u) == 0) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ffu;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 0x1f) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline void copy16_f32_generic(float *dst, const float *src)
{
    memcpy(dst, src, 16 * sizeof(float));
}

static inline void copy16_bf16_generic(float *dst, const uint16_t *src)
{
    for (int i = 0; i < 16; i++) dst[i] = bf16_to_f32(src[i]);
}

static inline void copy16_f16_generic(float *dst, const uint16_t *src)
{
    for (int i = 0; i < 16; i++) dst[i] = f16_to_f32(src[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Portable path: GCC/Clang vector extensions, 8 lanes (two SSE registers on baseline x86-64).  */

typedef float vgen_t __attribute__((vector_size(32), aligned(32)));

static inline vgen_t vgen_max(vgen_t a, vgen_t b)
{
    vgen_t r;
    for (int l = 0; l < 8; l++) r[l] = a[l] > b[l] ? a[l] : b[l];
    return r;
}

static inline float vgen_hsum(vgen_t v)
{
    float s = 0.0f;
    for (int l = 0; l < 8; l++) s += v[l];
    return s;
}

static inline vgen_t vgen_bcast(const float *p)
{
    const float x = *p;
    vgen_t r = {x, x, x, x, x, x, x, x};
    return r;
}

#define SFX _generic
#define V vgen_t
#define VW 8
#define MAXJ 4
#define VZERO() ((vgen_t){0, 0, 0, 0, 0, 0, 0, 0})
#define VNEGINF() ((vgen_t){-INFINITY, -INFINITY, -INFINITY, -INFINITY, \
                            -INFINITY, -INFINITY, -INFINITY, -INFINITY})
#define VLOAD(p) (*(const vgen_t *)(p))
#define VBCAST(p) vgen_bcast(p)
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VMAX(a, b) vgen_max(a, b)
#define HSUM(v) vgen_hsum(v)
#define COPY16_F32(dst, src) copy16_f32_generic(dst, src)
#define COPY16_BF16(dst, src) copy16_bf16_generic(dst, src)
#define COPY16_F16(dst, src) copy16_f16_generic(dst, src)
#include "_maxsim_impl.h"
#undef SFX
#undef V
#undef VW
#undef MAXJ
#undef VZERO
#undef VNEGINF
#undef VLOAD
#undef VBCAST
#undef VFMA
#undef VMAX
#undef HSUM
#undef COPY16_F32
#undef COPY16_BF16
#undef COPY16_F16

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define HAVE_X86_VARIANTS 1
#include <immintrin.h>

/* ---------------------------------- AVX2 + FMA + F16C ------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

static inline void copy16_f32_avx2(float *dst, const float *src)
{
    _mm256_store_ps(dst, _mm256_loadu_ps(src));
    _mm256_store_ps(dst + 8, _mm256_loadu_ps(src + 8));
}

static inline void copy16_bf16_avx2(float *dst, const uint16_t *src)
{
    for (int i = 0; i < 16; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(src + i));
        __m256i w = _mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16);
        _mm256_store_ps(dst + i, _mm256_castsi256_ps(w));
    }
}

static inline void copy16_f16_avx2(float *dst, const uint16_t *src)
{
    for (int i = 0; i < 16; i += 8)
        _mm256_store_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
}

static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#define SFX _avx2
#define V __m256
#define VW 8
#define MAXJ 8
#define VZERO() _mm256_setzero_ps()
#define VNEGINF() _mm256_set1_ps(-INFINITY)
#define VLOAD(p) _mm256_load_ps(p)
#define VBCAST(p) _mm256_broadcast_ss(p)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define VMAX(a, b) _mm256_max_ps(a, b)
#define HSUM(v) hsum_avx2(v)
#define COPY16_F32(dst, src) copy16_f32_avx2(dst, src)
#define COPY16_BF16(dst, src) copy16_bf16_avx2(dst, src)
#define COPY16_F16(dst, src) copy16_f16_avx2(dst, src)
#include "_maxsim_impl.h"
#undef SFX
#undef V
#undef VW
#undef MAXJ
#undef VZERO
#undef VNEGINF
#undef VLOAD
#undef VBCAST
#undef VFMA
#undef VMAX
#undef HSUM
#undef COPY16_F32
#undef COPY16_BF16
#undef COPY16_F16
#pragma GCC pop_options

/* --------------------------------------- AVX-512F ----------------------------------------- */
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c")

static inline void copy16_f32_avx512(float *dst, const float *src)
{
    _mm512_store_ps(dst, _mm512_loadu_ps(src));
}

static inline void copy16_bf16_avx512(float *dst, const uint16_t *src)
{
    __m256i h = _mm256_loadu_si256((const __m256i *)src);
    _mm512_store_ps(dst, _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
}

static inline void copy16_f16_avx512(float *dst, const uint16_t *src)
{
    _mm512_store_ps(dst, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src)));
}

#define SFX _avx512
#define V __m512
#define VW 16
#define MAXJ 16
#define VZERO() _mm512_setzero_ps()
#define VNEGINF() _mm512_set1_ps(-INFINITY)
#define VLOAD(p) _mm512_load_ps(p)
#define VBCAST(p) _mm512_set1_ps(*(p))
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VMAX(a, b) _mm512_max_ps(a, b)
#define HSUM(v) _mm512_reduce_add_ps(v)
#define COPY16_F32(dst, src) copy16_f32_avx512(dst, src)
#define COPY16_BF16(dst, src) copy16_bf16_avx512(dst, src)
#define COPY16_F16(dst, src) copy16_f16_avx512(dst, src)
#include "_maxsim_impl.h"
#undef SFX
#undef V
#undef VW
#undef MAXJ
#undef VZERO
#undef VNEGINF
#undef VLOAD
#undef VBCAST
#undef VFMA
#undef VMAX
#undef HSUM
#undef COPY16_F32
#undef COPY16_BF16
#undef COPY16_F16

/* AVX-512 variant for r_q <= 8: two candidate vectors per register. Lanes (2i, 2i+1) hold query
 * vector i against candidate vectors j and j+1: Qt2[d] = [q0 q0 q1 q1 ... q7 q7] and the staged
 * candidate pair (c_j[d], c_{j+1}[d]) is broadcast as one 64-bit element. This uses every lane at
 * (8, 16) instead of half of them. An odd tail repeats the last vector (a duplicate never changes
 * a max). */
static inline __attribute__((always_inline)) void g2_dot_group(
    const float *qt, const float *s, int64_t Db, __m512 *mx, const int JP)
{
    __m512 acc[16];
#pragma GCC unroll 16
    for (int p = 0; p < JP; p++) acc[p] = _mm512_setzero_ps();
    for (int64_t db = 0; db < Db; db++) {
        const float *sb = s + db * JP * 32;
        const float *qb = qt + db * 256;
#pragma GCC unroll 16
        for (int dd = 0; dd < 16; dd++) {
            const __m512 q = _mm512_load_ps(qb + dd * 16);
#pragma GCC unroll 16
            for (int p = 0; p < JP; p++) {
                const __m512 c = _mm512_castpd_ps(
                    _mm512_set1_pd(*(const double *)(sb + p * 32 + dd * 2)));
                acc[p] = _mm512_fmadd_ps(q, c, acc[p]);
            }
        }
    }
    __m512 m = *mx;
#pragma GCC unroll 16
    for (int p = 0; p < JP; p++) m = _mm512_max_ps(m, acc[p]);
    *mx = m;
}

static void g2_dot8(const float *qt, const float *s, int64_t Db, __m512 *mx)
{ g2_dot_group(qt, s, Db, mx, 8); }
static void g2_dot4(const float *qt, const float *s, int64_t Db, __m512 *mx)
{ g2_dot_group(qt, s, Db, mx, 4); }
static void g2_dot2(const float *qt, const float *s, int64_t Db, __m512 *mx)
{ g2_dot_group(qt, s, Db, mx, 2); }
static void g2_dot1(const float *qt, const float *s, int64_t Db, __m512 *mx)
{ g2_dot_group(qt, s, Db, mx, 1); }

static inline __m512 g2_load16(const char *row, int64_t off, int64_t D, int dtype)
{
    if (off + 16 <= D) {
        if (dtype == DT_F32) return _mm512_loadu_ps((const float *)row + off);
        const __m256i h = _mm256_loadu_si256((const __m256i *)((const uint16_t *)row + off));
        if (dtype == DT_BF16)
            return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
        return _mm512_cvtph_ps(h);
    }
    float tmp[16];
    for (int t = 0; t < 16; t++) {
        float v = 0.0f;
        if (off + t < D) {
            if (dtype == DT_F32) v = ((const float *)row)[off + t];
            else if (dtype == DT_BF16) v = bf16_to_f32(((const uint16_t *)row)[off + t]);
            else v = f16_to_f32(((const uint16_t *)row)[off + t]);
        }
        tmp[t] = v;
    }
    return _mm512_loadu_ps(tmp);
}

/* bf16 staging for the pair path (needs AVX512BW; chosen in py_score). */
__attribute__((target("avx512f,avx512bw,avx2,fma,f16c"))) static void g2_stage_bf16(
    float *s, const char *src, size_t vbytes, int JP, int nvec, int64_t D)
{
    /* Widen and interleave 32 dims of two rows with four 16-bit unpacks: unpacking
     * (0, a_d, b_d) words puts a_d and b_d in the high halves of adjacent float32 lanes.
     * The dims of 32-dim block kb land in the order g2_bf16_pos() gives; the packed query
     * uses the same order, and past D both are zero. */
    const int64_t KB = (D + 31) / 32, Dfull = D / 32;
    const __m512i z = _mm512_setzero_si512();
    for (int p = 0; p < JP; p++) {
        const int ja = 2 * p < nvec ? 2 * p : nvec - 1;
        const int jb = 2 * p + 1 < nvec ? 2 * p + 1 : nvec - 1;
        const uint16_t *ra = (const uint16_t *)(src + (size_t)ja * vbytes);
        const uint16_t *rb = (const uint16_t *)(src + (size_t)jb * vbytes);
        for (int64_t kb = 0; kb < KB; kb++) {
            __m512i a, b;
            if (kb < Dfull) {
                a = _mm512_loadu_si512((const void *)(ra + kb * 32));
                b = _mm512_loadu_si512((const void *)(rb + kb * 32));
            } else {
                const __mmask32 k = (__mmask32)((1ull << (D - kb * 32)) - 1);
                a = _mm512_maskz_loadu_epi16(k, ra + kb * 32);
                b = _mm512_maskz_loadu_epi16(k, rb + kb * 32);
            }
            const __m512i tl = _mm512_unpacklo_epi16(a, b), th = _mm512_unpackhi_epi16(a, b);
            float *d0 = s + ((2 * kb) * JP + p) * 32, *d1 = s + ((2 * kb + 1) * JP + p) * 32;
            _mm512_store_si512((void *)d0, _mm512_unpacklo_epi16(z, tl));
            _mm512_store_si512((void *)(d0 + 16), _mm512_unpackhi_epi16(z, tl));
            _mm512_store_si512((void *)d1, _mm512_unpacklo_epi16(z, th));
            _mm512_store_si512((void *)(d1 + 16), _mm512_unpackhi_epi16(z, th));
        }
    }
}

/* Stage vectors [0, 2*JP) of `src` (nvec real ones; later slots repeat the last) as pairs. */
static void g2_stage(float *s, const char *src, size_t vbytes, int JP, int nvec, int64_t D,
                     int dtype)
{
    const int64_t Db = (D + 15) / 16;
    const __m512i lo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const __m512i hi =
        _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
    for (int p = 0; p < JP; p++) {
        const int ja = 2 * p < nvec ? 2 * p : nvec - 1;
        const int jb = 2 * p + 1 < nvec ? 2 * p + 1 : nvec - 1;
        const char *ra = src + (size_t)ja * vbytes, *rb = src + (size_t)jb * vbytes;
        for (int64_t db = 0; db < Db; db++) {
            const __m512 a = g2_load16(ra, db * 16, D, dtype);
            const __m512 b = g2_load16(rb, db * 16, D, dtype);
            float *dst = s + (db * JP + p) * 32;
            _mm512_store_ps(dst, _mm512_permutex2var_ps(a, lo, b));
            _mm512_store_ps(dst + 16, _mm512_permutex2var_ps(a, hi, b));
        }
    }
}

static void g2_candidate(const job_t *jb, const char *doc, const char *pf, const float *qt_base,
                         int64_t nqq, float *out, int64_t out_stride, float *scratch, __m512 *mx)
{
    const int64_t D = jb->D, Db = jb->g2_db, r_c = jb->r_c;
    const size_t vbytes = (size_t)(jb->d_s1 * jb->esz);
    const int maxjp = jb->maxj / 2 < 8 ? jb->maxj / 2 : 8;
    for (int64_t t = 0; t < nqq; t++) mx[t] = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    while (j < r_c) {
        const int64_t rem = r_c - j;
        int JP;
        if (rem >= 16 && maxjp >= 8) JP = 8;
        else if (rem >= 8) JP = 4;
        else if (rem >= 4) JP = 2;
        else JP = 1;
        const int nvec = rem < 2 * JP ? (int)rem : 2 * JP;
        if (pf) prefetch_rows(jb, pf, j, nvec); /* spread over the candidate, not a burst */
        if (jb->g2_bf16)
            g2_stage_bf16(scratch, doc + (size_t)j * vbytes, vbytes, JP, nvec, D);
        else
            g2_stage(scratch, doc + (size_t)j * vbytes, vbytes, JP, nvec, D, jb->dtype);
        for (int64_t t = 0; t < nqq; t++) {
            const float *qt = qt_base + t * Db * 256;
            switch (JP) {
            case 8: g2_dot8(qt, scratch, Db, &mx[t]); break;
            case 4: g2_dot4(qt, scratch, Db, &mx[t]); break;
            case 2: g2_dot2(qt, scratch, Db, &mx[t]); break;
            default: g2_dot1(qt, scratch, Db, &mx[t]); break;
            }
        }
        j += nvec;
    }
    const __m512i swap = _mm512_set_epi32(14, 15, 12, 13, 10, 11, 8, 9, 6, 7, 4, 5, 2, 3, 0, 1);
    for (int64_t qq = 0; qq < nqq; qq++) {
        const __m512 m2 = _mm512_max_ps(mx[qq], _mm512_permutexvar_ps(swap, mx[qq]));
        out[qq * out_stride] = _mm512_reduce_add_ps(_mm512_maskz_compress_ps(0x5555, m2));
    }
}

static int run_range_avx512_g2(const job_t *jb, int64_t start, int64_t end)
{
    const int64_t Db = jb->g2_db;
    float *scratch = NULL;
    __m512 *mx = NULL;
    const int64_t qchunk = jb->mode == MODE_FULL ? jb->qchunk : 1;
    if (posix_memalign((void **)&scratch, 64, sizeof(float) * (size_t)(Db * 256)) != 0)
        return -1;
    if (posix_memalign((void **)&mx, 64, sizeof(__m512) * (size_t)qchunk) != 0) {
        free(scratch);
        return -1;
    }
    const size_t qstride = (size_t)(Db * 256);
    if (jb->mode == MODE_FULL) {
        for (int64_t q0 = 0; q0 < jb->nq; q0 += qchunk) {
            const int64_t nqq = (jb->nq - q0) < qchunk ? (jb->nq - q0) : qchunk;
            for (int64_t k = start; k < end; k++) {
                const char *doc = jb->d + (size_t)(k * jb->d_s0 * jb->esz);
                const char *pf = k + jb->pf_ahead < end
                                     ? doc + (size_t)(jb->pf_ahead * jb->d_s0 * jb->esz)
                                     : NULL;
                g2_candidate(jb, doc, pf, jb->qt + q0 * qstride, nqq,
                             jb->out + q0 * jb->out_s0 + k * jb->out_s1, jb->out_s0, scratch, mx);
            }
        }
    } else {
        for (int64_t p = start; p < end; p++) {
            const int64_t qi = p / jb->m, k = p % jb->m;
            int64_t row;
            if (jb->mode == MODE_IDS)
                row = jb->ids[qi * jb->ids_s0 + k * jb->ids_s1] * jb->d_s0;
            else
                row = qi * jb->pair_s0 + k * jb->d_s0;
            const char *pf = p + jb->pf_ahead < end ? item_ptr(jb, p + jb->pf_ahead) : NULL;
            g2_candidate(jb, jb->d + (size_t)(row * jb->esz), pf, jb->qt + qi * qstride, 1,
                         jb->out + qi * jb->out_s0 + k * jb->out_s1, 0, scratch, mx);
        }
    }
    free(scratch);
    free(mx);
    return 0;
}

/* AVX-512 variant for r_q == 1: dims in the lanes, one dot product per candidate vector
 * (D/16 FMAs and one horizontal sum), running max over the r_c vectors. */
static inline float r1_candidate(const job_t *jb, const char *doc, const float *q)
{
    const int64_t D = jb->D, Db = (D + 15) / 16;
    const size_t vbytes = (size_t)(jb->d_s1 * jb->esz);
    float best = -INFINITY;
    for (int64_t j = 0; j < jb->r_c; j++) {
        const char *row = doc + (size_t)j * vbytes;
        __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
        int64_t db = 0;
        for (; db + 2 <= Db; db += 2) {
            a0 = _mm512_fmadd_ps(_mm512_load_ps(q + db * 16), g2_load16(row, db * 16, D, jb->dtype), a0);
            a1 = _mm512_fmadd_ps(_mm512_load_ps(q + db * 16 + 16),
                                 g2_load16(row, db * 16 + 16, D, jb->dtype), a1);
        }
        if (db < Db)
            a0 = _mm512_fmadd_ps(_mm512_load_ps(q + db * 16), g2_load16(row, db * 16, D, jb->dtype), a0);
        const float sdot = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
        best = sdot > best ? sdot : best;
    }
    return best;
}

static int run_range_avx512_r1(const job_t *jb, int64_t start, int64_t end)
{
    const int64_t Dp = (jb->D + 15) / 16 * 16;
    if (jb->mode == MODE_FULL) {
        for (int64_t k = start; k < end; k++) {
            const char *doc = jb->d + (size_t)(k * jb->d_s0 * jb->esz);
            if (k + jb->pf_ahead < end)
                prefetch_prefix(jb, doc + (size_t)(jb->pf_ahead * jb->d_s0 * jb->esz));
            for (int64_t qi = 0; qi < jb->nq; qi++)
                jb->out[qi * jb->out_s0 + k * jb->out_s1] = r1_candidate(jb, doc, jb->qt + qi * Dp);
        }
    } else {
        for (int64_t p = start; p < end; p++) {
            const int64_t qi = p / jb->m, k = p % jb->m;
            if (p + jb->pf_ahead < end) prefetch_prefix(jb, item_ptr(jb, p + jb->pf_ahead));
            jb->out[qi * jb->out_s0 + k * jb->out_s1] =
                r1_candidate(jb, item_ptr(jb, p), jb->qt + qi * Dp);
        }
    }
    return 0;
}
#pragma GCC pop_options
#include "_maxsim_direct.h"
/* AMX needs Linux (the OS grants the tile state per process) and a compiler with the AMX
 * intrinsics (GCC 11+, Clang 12+). */
#if defined(__linux__) && ((!defined(__clang__) && __GNUC__ >= 11) || \
                           (defined(__clang__) && __clang_major__ >= 12))
#define HAVE_AMX 1
#include "_maxsim_amx.h"
#else
static int amx_available(void) { return 0; }
#endif

/* vdpbf16ps is full rate on AMD Zen 4/5 but retires at about a quarter of the float32 FMA
 * rate on Intel Sapphire Rapids (measured: bf16 (16,64) 120k vs 245k cand/s staged, D=384), so
 * by default the bfloat16 direct path is used on AMD, and elsewhere only for r_q <= 4 (where it
 * still beat staging: D=384 (2,4) 6.5M vs 3.2M cand/s); "avx512-direct" forces it. */
static int bf16_dp_fast(void) { return __builtin_cpu_is("amd"); }
#endif /* x86-64 */

/* ------------------------------------------------------------------------------------------ */
/* Dispatch.                                                                                  */

static int isa_supported(int isa)
{
    if (isa == ISA_GENERIC) return 1;
#ifdef HAVE_X86_VARIANTS
    __builtin_cpu_init();
    if (isa == ISA_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               __builtin_cpu_supports("f16c");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx2") &&
               __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
#endif
    return 0;
}

static int best_isa(void)
{
    if (isa_supported(ISA_AVX512)) return ISA_AVX512;
    if (isa_supported(ISA_AVX2)) return ISA_AVX2;
    return ISA_GENERIC;
}

static int isa_lanes(int isa)
{
    return isa == ISA_AVX512 ? 16 : 8;
}

static const char *isa_name(int isa)
{
    return isa == ISA_AVX512 ? "avx512" : isa == ISA_AVX2 ? "avx2" : "generic";
}

typedef int (*run_fn)(const job_t *, int64_t, int64_t);

static run_fn isa_runner(int isa)
{
#ifdef HAVE_X86_VARIANTS
    if (isa == ISA_AVX512) return run_range_avx512;
    if (isa == ISA_AVX2) return run_range_avx2;
#endif
    (void)isa;
    return run_range_generic;
}

typedef struct {
    const job_t *jb;
    run_fn fn;
    int64_t start, end;
    int status;
} task_t;

static void *task_main(void *arg)
{
    task_t *t = (task_t *)arg;
    t->status = t->fn(t->jb, t->start, t->end);
    return NULL;
}

/* Returns 0 on success, -1 on allocation/thread failure. Called without the GIL. */
static int run_job(const job_t *jb, run_fn fn, int64_t nitems, int nthreads)
{
    if (nitems <= 0) return 0;
    if (nthreads < 1) nthreads = 1;
    if (nthreads > 256) nthreads = 256;
    if (nthreads > nitems) nthreads = (int)nitems;
    task_t tasks[256];
    pthread_t th[256];
    int started[256];
    const int64_t per = nitems / nthreads, extra = nitems % nthreads;
    int64_t pos = 0;
    for (int t = 0; t < nthreads; t++) {
        const int64_t cnt = per + (t < extra ? 1 : 0);
        tasks[t].jb = jb;
        tasks[t].fn = fn;
        tasks[t].start = pos;
        tasks[t].end = pos + cnt;
        tasks[t].status = 0;
        pos += cnt;
    }
    for (int t = 1; t < nthreads; t++)
        started[t] = pthread_create(&th[t], NULL, task_main, &tasks[t]) == 0;
    task_main(&tasks[0]);
    int status = tasks[0].status;
    for (int t = 1; t < nthreads; t++) {
        if (started[t]) {
            pthread_join(th[t], NULL);
            if (tasks[t].status != 0) status = -1;
        } else {
            /* could not start a thread: do its share here */
            task_main(&tasks[t]);
            if (tasks[t].status != 0) status = -1;
        }
    }
    return status;
}

/* score(out, out_s0, out_s1,
 *       q, nq, q_s0, q_s1, r_q,
 *       d, dtype, d_s0, d_s1, r_c, D,
 *       mode, ids, ids_s0, ids_s1, m, pair_s0,
 *       nthreads, isa)
 * All pointers are integers (tensor.data_ptr()), all strides in elements; the last dimension of
 * queries and documents must be contiguous. isa: -1 = best available. */

/* The job fields every path shares, from the arguments of the entry point below (the rest
 * zeroed; each path then sets its own). */
#define JOB_INIT(jb)                                    \
    do {                                                \
        memset(&(jb), 0, sizeof(jb));                   \
        (jb).out = (float *)(uintptr_t)out_p;           \
        (jb).out_s0 = out_s0;                           \
        (jb).out_s1 = out_s1;                           \
        (jb).nq = nq;                                   \
        (jb).d = (const char *)(uintptr_t)d_p;          \
        (jb).dtype = dtype;                             \
        (jb).esz = dtype == DT_F32 ? 4 : 2;             \
        (jb).d_s0 = d_s0;                               \
        (jb).d_s1 = d_s1;                               \
        (jb).r_q = r_q;                                 \
        (jb).r_c = r_c;                                 \
        (jb).D = D;                                     \
        (jb).mode = mode;                               \
        (jb).ids = (const int64_t *)(uintptr_t)ids_p;   \
        (jb).ids_s0 = ids_s0;                           \
        (jb).ids_s1 = ids_s1;                           \
        (jb).m = m;                                     \
        (jb).pair_s0 = pair_s0;                         \
    } while (0)

/* Name of the path the last score() call ran (set with the GIL held; for tests and the
 * benchmark). */
static const char *last_path = "";

#ifdef HAVE_X86_VARIANTS
/* Run a job of a path with a packed query (AMX, direct) without the GIL, record the path and
 * free the packed query halves. */
static PyObject *run_packed(const job_t *jb, run_fn fn, int64_t nitems, int nthreads,
                            const char *name, void *hi, void *lo)
{
    int status;
    Py_BEGIN_ALLOW_THREADS
    status = run_job(jb, fn, nitems, nthreads);
    Py_END_ALLOW_THREADS
    last_path = name;
    free(hi);
    free(lo);
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}
#endif

static PyObject *py_score(PyObject *self, PyObject *args)
{
    (void)self;
    unsigned long long out_p, q_p, d_p, ids_p;
    Py_ssize_t out_s0, out_s1, nq, q_s0, q_s1, r_q, d_s0, d_s1, r_c, D, ids_s0, ids_s1, m,
        pair_s0;
    int dtype, mode, nthreads, isa;
    if (!PyArg_ParseTuple(args, "KnnKnnnnKinnnniKnnnnii", &out_p, &out_s0, &out_s1, &q_p, &nq,
                          &q_s0, &q_s1, &r_q, &d_p, &dtype, &d_s0, &d_s1, &r_c, &D, &mode,
                          &ids_p, &ids_s0, &ids_s1, &m, &pair_s0, &nthreads, &isa))
        return NULL;
    const int no_pairs = isa >= 0 && (isa & 16);
    const int no_direct = isa >= 0 && (isa & 48);
    const int force_direct = isa >= 0 && (isa & 64);
    const int no_amx = isa >= 0 && (isa & 128);
    if (isa >= 0) isa &= 15;
    if (isa < 0) isa = best_isa();
    if (isa > ISA_AVX512 || !isa_supported(isa)) {
        PyErr_Format(PyExc_RuntimeError, "instruction set %d is not supported by this CPU", isa);
        return NULL;
    }
    if (dtype < DT_F32 || dtype > DT_BF16 || mode < MODE_FULL || mode > MODE_IDS) {
        PyErr_SetString(PyExc_ValueError, "bad dtype or mode code");
        return NULL;
    }
    if (nq < 0 || m < 0 || r_q < 1 || r_c < 1 || D < 1 || !out_p || !q_p || !d_p ||
        (mode == MODE_IDS && !ids_p)) {
        PyErr_SetString(PyExc_ValueError, "bad sizes or null pointer");
        return NULL;
    }
    if (nq == 0 || m == 0) {
        last_path = "";
        Py_RETURN_NONE;
    }

#ifdef HAVE_X86_VARIANTS
    /* AMX path (16-bit storage, D a multiple of 32, r_q >= 2, CPUs with AMX-BF16 and the OS's
     * grant): used wherever it can run. Measured faster than the direct / pairs / staged paths
     * at every budget from (2,4) to (16,64), D = 128 and 384, both 16-bit dtypes, when the
     * candidates stream from memory (N = 50k-100k); in cache, float16 (4,8) / (8,16) at D=128
     * ran 5-20% slower than the pairs path (the float16 split costs more than the products). */
#ifdef HAVE_AMX
    const int amx = isa == ISA_AVX512 && !no_amx && dtype != DT_F32 && D % 32 == 0 &&
                    r_q >= 2 && amx_available();
    if (amx) {
        amx_pack_t pk;
        if (amx_pack(&pk, (const float *)(uintptr_t)q_p, nq, q_s0, q_s1, r_q, r_c, D) != 0)
            return PyErr_NoMemory();
        job_t jb;
        JOB_INIT(jb);
        jb.pack = &pk;
        /* AMX: ~48 KiB ahead, at least 1 candidate, on every stream (without it, float16
         * (8,16) / (16,64) at D=384 ran at about half speed from DRAM) */
        jb.pf_ahead = prefetch_distance_bytes(MODE_PAIR, r_c, D, jb.esz, d_s0, d_s1, 49152, 1);
        return run_packed(&jb, run_range_amx, mode == MODE_FULL ? m : nq * m, nthreads, "amx",
                          pk.hi, pk.lo);
    }
#else
    (void)no_amx;
#endif

    /* AVX-512 direct path (float32, or bfloat16 with AVX512_BF16): rows read in place. */
    const int direct = isa == ISA_AVX512 && !no_direct && r_q >= 2 && D % 32 == 0 &&
                       d_s1 >= D && (dtype == DT_F32 || dtype == DT_BF16) &&
                       __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512vl") &&
                       (dtype == DT_F32 ||
                        (__builtin_cpu_supports("avx512bf16") && (force_direct || r_q <= 4 || bf16_dp_fast())));
    if (direct) {
        dr_pack_t pk;
        if (dr_pack(&pk, (const float *)(uintptr_t)q_p, nq, q_s0, q_s1, r_q, D,
                    dtype == DT_BF16) != 0)
            return PyErr_NoMemory();
        job_t jb;
        JOB_INIT(jb);
        jb.pack = &pk;
        /* The direct path reads 8 rows at a time, interleaved: software prefetch of a later
         * candidate pays even on one linear stream (unlike the staged paths). */
        jb.pf_ahead = prefetch_distance(MODE_PAIR, r_c, D, jb.esz, d_s0, d_s1);
        return run_packed(&jb, run_range_avx512_direct, mode == MODE_FULL ? m : nq * m,
                          nthreads, "direct", pk.hi, pk.lo);
    }
#endif

    /* AVX-512 with r_q <= 8: two candidate vectors per register (lanes = 8 queries x 2). */
    const int pairs = isa == ISA_AVX512 && r_q <= 8 && !no_pairs;
    /* AVX-512 with r_q == 1: plain dot products with the dims in the lanes. */
    const int single = pairs && r_q == 1;
    const int vw = isa_lanes(isa);
    const int64_t nqb = pairs ? 1 : (r_q + vw - 1) / vw;
    /* bf16 in the pair path: staged in 32-dim blocks, dims in g2_bf16_dim() order */
    int bf16_pairs = pairs && !single && dtype == DT_BF16;
#ifdef HAVE_X86_VARIANTS
    bf16_pairs = bf16_pairs && __builtin_cpu_supports("avx512bw");
#endif
    /* rows padded with zeros to whole dim blocks */
    const int64_t Dp = bf16_pairs ? (D + 31) / 32 * 32 : (D + 15) / 16 * 16;
    float *qt = NULL;
    const size_t qt_elems = (size_t)nq * (size_t)nqb * (size_t)Dp * (size_t)vw;
    if (posix_memalign((void **)&qt, 64, qt_elems * sizeof(float)) != 0) return PyErr_NoMemory();
    memset(qt, 0, qt_elems * sizeof(float));
    const float *q = (const float *)(uintptr_t)q_p;
    for (int64_t qi = 0; qi < nq; qi++)
        for (int64_t i = 0; i < r_q; i++) {
            const float *src = q + qi * q_s0 + i * q_s1;
            if (single) {
                float *dst = qt + qi * Dp;
                for (int64_t dd = 0; dd < D; dd++) dst[dd] = src[dd];
            } else if (pairs) {
                float *dst = qt + qi * Dp * 16 + 2 * i;
                for (int64_t dd = 0; dd < D; dd++) {
                    const int64_t at = bf16_pairs ? g2_bf16_pos(dd) : dd;
                    dst[at * 16] = dst[at * 16 + 1] = src[dd];
                }
            } else {
                float *dst = qt + ((qi * nqb + i / vw) * Dp) * vw + (i % vw);
                for (int64_t dd = 0; dd < D; dd++) dst[dd * vw] = src[dd];
            }
        }

    job_t jb;
    JOB_INIT(jb);
    jb.qt = qt;
    jb.nqb = nqb;
    jb.g2_db = Dp / 16;
    jb.g2_bf16 = bf16_pairs;
    /* keep the packed queries of one pass in ~1 MiB (L2) */
    int64_t qc = (int64_t)(1 << 20) / (nqb * Dp * vw * (int64_t)sizeof(float));
    jb.qchunk = qc < 1 ? 1 : qc;
    /* staged group (J * Dp floats) and packed query block (Dp * vw floats) share the L1 */
    jb.maxj = Dp <= 256 ? 16 : 8;
    jb.pf_ahead = prefetch_distance(mode, r_c, D, jb.esz, d_s0, d_s1);
    {
        const char *env = getenv("METAEMBED_RAG_MAXSIM_MAXJ"); /* tuning knob */
        if (env && (atoi(env) == 8 || atoi(env) == 16)) jb.maxj = atoi(env);
    }

    const int64_t nitems = mode == MODE_FULL ? m : nq * m;
    int status;
    Py_BEGIN_ALLOW_THREADS
#ifdef HAVE_X86_VARIANTS
    run_fn fn = single ? run_range_avx512_r1 : pairs ? run_range_avx512_g2 : isa_runner(isa);
#else
    run_fn fn = isa_runner(isa);
#endif
    status = run_job(&jb, fn, nitems, nthreads);
    Py_END_ALLOW_THREADS
    last_path = single ? "r1" : pairs ? "pairs" : "staged";
    free(qt);
    if (status != 0) return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(isa_name(best_isa()));
}

static PyObject *py_isa_supported(PyObject *self, PyObject *arg)
{
    (void)self;
    long isa = PyLong_AsLong(arg);
    if (isa == -1 && PyErr_Occurred()) return NULL;
    return PyBool_FromLong(isa >= 0 && isa <= ISA_AVX512 && isa_supported((int)isa));
}

static PyObject *py_last_path(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
    return PyUnicode_FromString(last_path);
}

static PyObject *py_amx_supported(PyObject *self, PyObject *noargs)
{
    (void)self;
    (void)noargs;
#ifdef HAVE_X86_VARIANTS
    return PyBool_FromLong(isa_supported(ISA_AVX512) && amx_available());
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"score", py_score, METH_VARARGS,
     "score(out, out_s0, out_s1, q, nq, q_s0, q_s1, r_q, d, dtype, d_s0, d_s1, r_c, D, mode, "
     "ids, ids_s0, ids_s1, m, pair_s0, nthreads, isa) -> None. Raw-pointer budgeted MaxSim."},
    {"best_isa", py_best_isa, METH_NOARGS, "Name of the instruction set used by default."},
    {"isa_supported", py_isa_supported, METH_O, "Whether ISA code 0/1/2 runs on this CPU."},
    {"last_path", py_last_path, METH_NOARGS,
     "Path the last score() call ran: amx, direct, pairs, r1 or staged ('' before any)."},
    {"amx_supported", py_amx_supported, METH_NOARGS,
     "Whether the AMX-BF16 path runs here (CPU support and the OS's grant of the tile state)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_maxsim", "Fused budgeted MaxSim CPU kernel.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__maxsim(void)
{
    return PyModule_Create(&moduledef);
}
