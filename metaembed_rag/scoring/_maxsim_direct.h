/*
 * "Direct" AVX-512 path of the MaxSim kernel, included once by _maxsim.c (x86-64 only).
 *
 * Candidates are read in place, in their natural (Kc, D) layout, with no staging copy:
 * every inner-loop operand is a broadcast load straight from the index row.
 *
 * Lanes.  A 16-lane register holds G query vectors x W dim slots (G * W = 16, lane = g*W + w):
 *   r_q in (8, 16]: G = 16, W = 1;  (4, 8]: G = 8, W = 2;  (2, 4]: G = 4, W = 4;  2: G = 2, W = 8.
 * The query prefix is packed once per call as Qp[t][lane] = q_g[t*W + w] (zero past r_q), and the
 * W consecutive candidate values c_j[t*W .. t*W+W-1] are broadcast to every group with one
 * 32/64/128/256-bit broadcast load (all lanes in use at every r_q, no shuffles in the loop).
 * After the sum over t, a butterfly over the W slots gives every lane of group g the dot product
 * <q_g, c_j>; the running max over j is lane-wise and the final sum takes one lane per group.
 *
 * bfloat16 storage (needs AVX512_BF16): one `vdpbf16ps` multiplies a 32-bit word of two stored
 * bf16 values (dims 2k, 2k+1) by the matching pair of query values and adds both products in
 * float32. The float32 query is split exactly enough into hi = bf16(q) and lo = bf16(q - hi)
 * (|q - hi - lo| <= 2^-18 |q|) and both parts are applied, so the result matches the float32
 * computation to about 4e-6 of sum |q c| (tested); the stored values are used as they are.
 * Products of bf16 values are exact in float32; `vdpbf16ps` rounds to nearest-even and treats
 * bf16 denormals (below 1.2e-38) as zero.
 *
 * Two accumulator sets (hi/lo for bf16, even/odd t for float32) keep 16 independent FMA chains
 * in flight per group of 8 candidate vectors; float32 at r_q > 8 (W = 1) takes 4 vectors x 4
 * consecutive chunks instead (also 16 chains, fewer row streams at once).
 */

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,avx2,fma,f16c")

/* Sum over the W dim slots of each group; every lane of the group gets the same value. */
static inline __attribute__((always_inline)) __m512 dr_reduce(__m512 x, const int W)
{
    if (W >= 2) x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
    if (W >= 4) x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
    if (W >= 8) x = _mm512_add_ps(x, _mm512_shuffle_f32x4(x, x, 0xB1));
    return x;
}

/* W consecutive float32 values broadcast to every group of W lanes. */
static inline __attribute__((always_inline)) __m512 dr_bc_f32(const float *p, const int W)
{
    if (W == 1) return _mm512_set1_ps(*p);
    if (W == 2) return _mm512_castpd_ps(_mm512_set1_pd(*(const double *)p));
    if (W == 4) return _mm512_broadcast_f32x4(_mm_loadu_ps(p));
    return _mm512_broadcast_f32x8(_mm256_loadu_ps(p));
}

/* W consecutive 32-bit words (2W bf16 values) broadcast to every group of W lanes. */
static inline __attribute__((always_inline)) __m512i dr_bc_w32(const uint16_t *p, const int W)
{
    if (W == 1) return _mm512_set1_epi32(*(const int32_t *)p);
    if (W == 2) return _mm512_set1_epi64(*(const long long *)p);
    if (W == 4) return _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)p));
    return _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)p));
}

/* J candidate vectors (vs elements apart) against one packed query block (T chunks), TT
 * consecutive chunks per step: J * TT <= 16 independent accumulators (FMA chains) in flight. */
static inline __attribute__((always_inline)) void dr_f32_group(
    const float *qp, const float *c, int64_t vs, int64_t T, __m512 *mx, const int W, const int J,
    const int TT)
{
    __m512 a[16];
    const float *p[8];
#pragma GCC unroll 16
    for (int k = 0; k < J * TT; k++) a[k] = _mm512_setzero_ps();
#pragma GCC unroll 8
    for (int jj = 0; jj < J; jj++) p[jj] = c + jj * vs;
    int64_t t = 0;
    for (; t + TT <= T; t += TT) {
#pragma GCC unroll 8
        for (int u = 0; u < TT; u++) {
            const __m512 q = _mm512_load_ps(qp + (t + u) * 16);
#pragma GCC unroll 8
            for (int jj = 0; jj < J; jj++)
                a[jj * TT + u] =
                    _mm512_fmadd_ps(q, dr_bc_f32(p[jj] + (t + u) * W, W), a[jj * TT + u]);
        }
    }
    for (; t < T; t++) {
        const __m512 q = _mm512_load_ps(qp + t * 16);
#pragma GCC unroll 8
        for (int jj = 0; jj < J; jj++)
            a[jj * TT] = _mm512_fmadd_ps(q, dr_bc_f32(p[jj] + t * W, W), a[jj * TT]);
    }
    __m512 m = *mx;
#pragma GCC unroll 8
    for (int jj = 0; jj < J; jj++) {
        __m512 sum = a[jj * TT];
#pragma GCC unroll 8
        for (int u = 1; u < TT; u++) sum = _mm512_add_ps(sum, a[jj * TT + u]);
        m = _mm512_max_ps(m, dr_reduce(sum, W));
    }
    *mx = m;
}

static inline __attribute__((always_inline)) void dr_bf16_group(
    const int32_t *qh, const int32_t *ql, const uint16_t *c, int64_t vs, int64_t T, __m512 *mx,
    const int W, const int J)
{
    __m512 ah[8], al[8];
    const uint16_t *p[8];
#pragma GCC unroll 8
    for (int jj = 0; jj < J; jj++) {
        ah[jj] = _mm512_setzero_ps();
        al[jj] = _mm512_setzero_ps();
        p[jj] = c + jj * vs;
    }
    for (int64_t t = 0; t < T; t++) {
        const __m512bh h = (__m512bh)_mm512_load_si512((const void *)(qh + t * 16));
        const __m512bh l = (__m512bh)_mm512_load_si512((const void *)(ql + t * 16));
#pragma GCC unroll 8
        for (int jj = 0; jj < J; jj++) {
            const __m512bh b = (__m512bh)dr_bc_w32(p[jj] + t * 2 * W, W);
            ah[jj] = _mm512_dpbf16_ps(ah[jj], h, b);
            al[jj] = _mm512_dpbf16_ps(al[jj], l, b);
        }
    }
    __m512 m = *mx;
#pragma GCC unroll 8
    for (int jj = 0; jj < J; jj++) m = _mm512_max_ps(m, dr_reduce(_mm512_add_ps(ah[jj], al[jj]), W));
    *mx = m;
}

/* Prefetch rows [j, j + n) of a later candidate (row bytes rb, vb apart) into L2, spread over
 * the groups of the current candidate rather than issued in one burst. */
static inline __attribute__((always_inline)) void dr_prefetch(const char *pf, int64_t j,
                                                              int64_t n, size_t vb, size_t rb)
{
    if (!pf) return;
    for (int64_t r = j; r < j + n; r++)
        for (size_t off = 0; off < rb; off += 64) __builtin_prefetch(pf + r * vb + off, 0, 2);
}

#define DR_GROUPS(W)                                                                            \
    static void dr_f32_w##W(const float *qp, const float *c, int64_t vs, int64_t T,             \
                            int64_t r_c, __m512 *mx, const char *pf, size_t rb)                 \
    {                                                                                           \
        const size_t vb = (size_t)vs * 4;                                                       \
        int64_t j = 0;                                                                          \
        if (W == 1) /* 4 vectors x 4 chunks: 5-10% faster than 8 x 2 at r_q > 8 (A/B run) */   \
            for (; j + 4 <= r_c; j += 4) {                                                      \
                dr_prefetch(pf, j, 4, vb, rb);                                                  \
                dr_f32_group(qp, c + j * vs, vs, T, mx, W, 4, 4);                               \
            }                                                                                   \
        for (; j + 8 <= r_c; j += 8) {                                                          \
            dr_prefetch(pf, j, 8, vb, rb);                                                      \
            dr_f32_group(qp, c + j * vs, vs, T, mx, W, 8, 2);                                   \
        }                                                                                       \
        dr_prefetch(pf, j, r_c - j, vb, rb);                                                    \
        if (j + 4 <= r_c) { dr_f32_group(qp, c + j * vs, vs, T, mx, W, 4, 2); j += 4; }        \
        if (j + 2 <= r_c) { dr_f32_group(qp, c + j * vs, vs, T, mx, W, 2, 2); j += 2; }        \
        if (j < r_c) dr_f32_group(qp, c + j * vs, vs, T, mx, W, 1, 2);                          \
    }                                                                                           \
    static void dr_bf16_w##W(const int32_t *qh, const int32_t *ql, const uint16_t *c,           \
                             int64_t vs, int64_t T, int64_t r_c, __m512 *mx, const char *pf,    \
                             size_t rb)                                                         \
    {                                                                                           \
        const size_t vb = (size_t)vs * 2;                                                       \
        int64_t j = 0;                                                                          \
        for (; j + 8 <= r_c; j += 8) {                                                          \
            dr_prefetch(pf, j, 8, vb, rb);                                                      \
            dr_bf16_group(qh, ql, c + j * vs, vs, T, mx, W, 8);                                 \
        }                                                                                       \
        dr_prefetch(pf, j, r_c - j, vb, rb);                                                    \
        if (j + 4 <= r_c) { dr_bf16_group(qh, ql, c + j * vs, vs, T, mx, W, 4); j += 4; }      \
        if (j + 2 <= r_c) { dr_bf16_group(qh, ql, c + j * vs, vs, T, mx, W, 2); j += 2; }      \
        if (j < r_c) dr_bf16_group(qh, ql, c + j * vs, vs, T, mx, W, 1);                        \
    }
DR_GROUPS(1)
DR_GROUPS(2)
DR_GROUPS(4)
DR_GROUPS(8)
#undef DR_GROUPS

/* The packed query of the direct path: nqb blocks of G vectors, T chunks of 16 lanes each.
 * float32: one array; bf16: hi and lo word arrays (two bf16 query values per 32-bit lane). */
typedef struct {
    int G, W;
    int64_t nqb, T;         /* blocks per query, chunks per block */
    size_t block;           /* elements (floats or words) per block */
    void *hi, *lo;          /* lo: bf16 only */
} dr_pack_t;

static int dr_group_size(int64_t r_q)
{
    return r_q > 8 ? 16 : r_q > 4 ? 8 : r_q > 2 ? 4 : 2;
}

static inline uint16_t dr_f32_to_bf16(float f) /* round to nearest even; inputs are finite */
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float dr_bf16_to_f32(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Pack nq queries (rows q + qi*q_s0 + i*q_s1, i < r_q, D floats each). Returns 0 or -1 (OOM). */
static int dr_pack(dr_pack_t *pk, const float *q, int64_t nq, int64_t q_s0, int64_t q_s1,
                   int64_t r_q, int64_t D, int bf16)
{
    const int G = dr_group_size(r_q), W = 16 / G;
    pk->G = G;
    pk->W = W;
    pk->nqb = (r_q + G - 1) / G;
    pk->T = bf16 ? D / (2 * W) : D / W;
    pk->block = (size_t)pk->T * 16;
    const size_t n = (size_t)nq * (size_t)pk->nqb * pk->block;
    pk->hi = pk->lo = NULL;
    if (posix_memalign(&pk->hi, 64, n * 4) != 0) return -1;
    memset(pk->hi, 0, n * 4);
    if (bf16) {
        if (posix_memalign(&pk->lo, 64, n * 4) != 0) {
            free(pk->hi);
            pk->hi = NULL;
            return -1;
        }
        memset(pk->lo, 0, n * 4);
    }
    for (int64_t qi = 0; qi < nq; qi++)
        for (int64_t i = 0; i < r_q; i++) {
            const float *src = q + qi * q_s0 + i * q_s1;
            const int64_t b = i / G, g = i % G;
            const size_t base = ((size_t)qi * (size_t)pk->nqb + (size_t)b) * pk->block;
            for (int64_t t = 0; t < pk->T; t++)
                for (int w = 0; w < W; w++) {
                    const size_t at = base + (size_t)t * 16 + (size_t)(g * W + w);
                    if (!bf16) {
                        ((float *)pk->hi)[at] = src[t * W + w];
                        continue;
                    }
                    uint32_t hw = 0, lw = 0;
                    for (int e = 0; e < 2; e++) {
                        const float v = src[2 * (t * W + w) + e];
                        const uint16_t h = dr_f32_to_bf16(v);
                        const uint16_t l = dr_f32_to_bf16(v - dr_bf16_to_f32(h));
                        hw |= (uint32_t)h << (16 * e);
                        lw |= (uint32_t)l << (16 * e);
                    }
                    ((uint32_t *)pk->hi)[at] = hw;
                    ((uint32_t *)pk->lo)[at] = lw;
                }
        }
    return 0;
}

/* One candidate against one packed query (all its blocks): sum_i max_j <q_i, c_j>.
 * pf: a later candidate to prefetch while this one is scored (or NULL). */
static float dr_candidate(const job_t *jb, const dr_pack_t *pk, const char *doc, int64_t qi,
                          const char *pf)
{
    const int64_t vs = jb->d_s1, T = pk->T, r_c = jb->r_c;
    const size_t rb = (size_t)(jb->D * jb->esz);
    const __mmask16 first = (__mmask16)(pk->W == 1 ? 0xFFFF : pk->W == 2 ? 0x5555
                                        : pk->W == 4 ? 0x1111 : 0x0101);
    float total = 0.0f;
    for (int64_t b = 0; b < pk->nqb; b++) {
        const size_t off = ((size_t)qi * (size_t)pk->nqb + (size_t)b) * pk->block;
        __m512 mx = _mm512_set1_ps(-INFINITY);
        if (jb->dtype == DT_F32) {
            const float *qp = (const float *)pk->hi + off, *c = (const float *)doc;
            switch (pk->W) {
            case 1: dr_f32_w1(qp, c, vs, T, r_c, &mx, pf, rb); break;
            case 2: dr_f32_w2(qp, c, vs, T, r_c, &mx, pf, rb); break;
            case 4: dr_f32_w4(qp, c, vs, T, r_c, &mx, pf, rb); break;
            default: dr_f32_w8(qp, c, vs, T, r_c, &mx, pf, rb); break;
            }
        } else {
            const int32_t *qh = (const int32_t *)pk->hi + off, *ql = (const int32_t *)pk->lo + off;
            const uint16_t *c = (const uint16_t *)doc;
            switch (pk->W) {
            case 1: dr_bf16_w1(qh, ql, c, vs, T, r_c, &mx, pf, rb); break;
            case 2: dr_bf16_w2(qh, ql, c, vs, T, r_c, &mx, pf, rb); break;
            case 4: dr_bf16_w4(qh, ql, c, vs, T, r_c, &mx, pf, rb); break;
            default: dr_bf16_w8(qh, ql, c, vs, T, r_c, &mx, pf, rb); break;
            }
        }
        total += _mm512_mask_reduce_add_ps(first, mx);
        pf = NULL; /* prefetched once, with the first block */
    }
    return total;
}

static int run_range_avx512_direct(const job_t *jb, int64_t start, int64_t end)
{
    const dr_pack_t *pk = (const dr_pack_t *)jb->pack;
    if (jb->mode == MODE_FULL) {
        for (int64_t k = start; k < end; k++) {
            const char *doc = jb->d + (size_t)(k * jb->d_s0 * jb->esz);
            const char *pf = k + jb->pf_ahead < end
                                 ? doc + (size_t)(jb->pf_ahead * jb->d_s0 * jb->esz)
                                 : NULL;
            for (int64_t qi = 0; qi < jb->nq; qi++, pf = NULL)
                jb->out[qi * jb->out_s0 + k * jb->out_s1] = dr_candidate(jb, pk, doc, qi, pf);
        }
    } else {
        for (int64_t p = start; p < end; p++) {
            const int64_t qi = p / jb->m, k = p % jb->m;
            const char *pf = p + jb->pf_ahead < end ? item_ptr(jb, p + jb->pf_ahead) : NULL;
            jb->out[qi * jb->out_s0 + k * jb->out_s1] =
                dr_candidate(jb, pk, item_ptr(jb, p), qi, pf);
        }
    }
    return 0;
}

#pragma GCC pop_options
