/*
 * AMX path of the MaxSim kernel for 16-bit storage, included once by _maxsim.c (x86-64 only).
 *
 * Intel AMX (Sapphire Rapids and later) multiplies bf16 tiles into float32 tiles:
 * `tdpbf16ps C, A, B` does C[m][n] += sum_k A[m][2k] B[k][2n] + A[m][2k+1] B[k][2n+1]
 * (A: M rows x 32 bf16, B: 16 rows x 16 pairs, C: M x 16 float32), 16 x 16 x 32 products per
 * instruction, the products exact in float32 and the sums rounded to nearest-even (bf16
 * denormals, below 1.2e-38, read as zero).
 *
 * Layout.  A = up to 16 candidate vectors x 32 dims, tile-loaded straight from the index row
 * in its natural (Kc, D) layout (row stride = the vector stride), so nothing is staged for
 * bfloat16 storage. B = 16 query vectors x 32 dims in the pair layout above, packed once per
 * call (query vectors past r_q are zero columns). C[m][n] = <c_m, q_n> after D/32 steps; the
 * column max over the M rows gives max_j <q_n, c_j>, and the sum over n < r_q the score.
 *
 * Exactness.  The float32 query is split into hi = bf16(q) and lo = bf16(q - hi)
 * (|q - hi - lo| <= 2^-18 |q|) and both B tiles are applied, as on the vdpbf16ps direct path.
 * float16 storage is split exactly into two bf16 tiles, c = c_hi + c_lo (an fp16 value has 11
 * significant bits; bf16 holds 8, the remainder fits in the second), staged one 32-dim step
 * ahead, and C += c_hi q_hi + c_hi q_lo + c_lo q_hi (the dropped c_lo q_lo is at most 2^-18
 * of |q c|).
 *
 * Tiles.  C0..C3 = tmm0..3 (four independent accumulators: 4 blocks of 16 candidate vectors,
 * from one candidate or several), A = tmm4/tmm5, B hi/lo = tmm6/tmm7. A block of a candidate
 * is 16 consecutive vectors, or all r_c when r_c < 16; when r_c is not a multiple of 16 the last
 * block is the last 16 vectors, overlapping the previous one (a repeated vector never changes a
 * max). More than 16 query vectors run in blocks of 16.
 *
 * The OS must grant the tile state first (Linux: arch_prctl(ARCH_REQ_XCOMP_PERM,
 * XFEATURE_XTILEDATA)); amx_available() asks once and the path is used only if that worked.
 */

#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,amx-tile,amx-bf16,avx2,fma,f16c")

#define AMX_ARCH_REQ_XCOMP_PERM 0x1023
#define AMX_XFEATURE_XTILEDATA 18

static int amx_state = -1; /* -1: not asked yet; 0: unavailable; 1: usable */

/* CPU has AMX-TILE + AMX-BF16 (+ AVX512-BF16 for the query split), the OS enables the tile
 * state in XCR0, and this process was granted it. Called with the GIL held. */
static int amx_available(void)
{
    if (amx_state >= 0) return amx_state;
    amx_state = 0;
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27))) return 0; /* OSXSAVE */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 24)) || !(d & (1u << 22))) return 0; /* AMX-TILE, AMX-BF16 */
    unsigned xlo, xhi;
    __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
    if ((xlo & 0x60000u) != 0x60000u) return 0; /* XTILECFG, XTILEDATA */
    if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw")) return 0;
#ifdef SYS_arch_prctl
    if (syscall(SYS_arch_prctl, AMX_ARCH_REQ_XCOMP_PERM, AMX_XFEATURE_XTILEDATA) != 0) return 0;
#else
    return 0;
#endif
    amx_state = 1;
    return 1;
}

typedef struct __attribute__((aligned(64))) {
    uint8_t palette, start_row;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg_t;

/* The packed query: for query qi, block b, step s (32 dims): 16 rows (dim pairs) x 16 query
 * vectors x 2 bf16, i.e. 512 uint16 (1 KiB) per step, hi and lo arrays (lo is NULL when
 * paired: both halves are in hi). */
typedef struct {
    int64_t nqb, S;     /* query blocks of 16, steps of 32 dims */
    size_t block;       /* uint16 per (query, block) = S * 512 */
    uint16_t *hi, *lo;
    int M;              /* rows per candidate block: min(16, r_c) */
    int64_t nb;         /* blocks per candidate */
    int paired;         /* r_q <= 8: hi in columns 0-7 and lo in 8-15 of one tile (hi only) */
} amx_pack_t;

static int amx_pack(amx_pack_t *pk, const float *q, int64_t nq, int64_t q_s0, int64_t q_s1,
                    int64_t r_q, int64_t r_c, int64_t D)
{
    pk->nqb = (r_q + 15) / 16;
    pk->S = D / 32;
    pk->block = (size_t)pk->S * 512;
    pk->M = r_c < 16 ? (int)r_c : 16;
    pk->nb = (r_c + 15) / 16;
    pk->paired = r_q <= 8;
    const size_t n = (size_t)nq * (size_t)pk->nqb * pk->block;
    pk->hi = pk->lo = NULL;
    if (posix_memalign((void **)&pk->hi, 64, n * 2) != 0) return -1;
    if (!pk->paired && posix_memalign((void **)&pk->lo, 64, n * 2) != 0) {
        free(pk->hi);
        pk->hi = NULL;
        return -1;
    }
    memset(pk->hi, 0, n * 2);
    if (pk->lo) memset(pk->lo, 0, n * 2);
    for (int64_t qi = 0; qi < nq; qi++)
        for (int64_t i = 0; i < r_q; i++) {
            const float *src = q + qi * q_s0 + i * q_s1;
            const int64_t b = i / 16, col = i % 16;
            const size_t base = ((size_t)qi * (size_t)pk->nqb + (size_t)b) * pk->block;
            for (int64_t dd = 0; dd < D; dd++) {
                const int64_t s = dd / 32, k = (dd % 32) / 2, e = dd % 2;
                const size_t at = base + (size_t)(s * 512 + k * 32 + col * 2 + e);
                const uint16_t h = dr_f32_to_bf16(src[dd]);
                const uint16_t l = dr_f32_to_bf16(src[dd] - dr_bf16_to_f32(h));
                pk->hi[at] = h;
                if (pk->paired)
                    pk->hi[at + 16] = l; /* column col + 8 */
                else
                    pk->lo[at] = l;
            }
        }
    return 0;
}

/* Widen 32 stored float16 values to float32 and split them exactly into two bf16 halves:
 * hi = the value rounded to 8 significant bits (add half of the dropped range, clear the low 16
 * bits: |value - hi| <= 2^-9 |value|), lo = value - hi (the rest of float16's 11 bits, at most 4
 * significant bits: exact in float32 and in bf16). */
static inline __attribute__((always_inline)) void amx_split_f16(const uint16_t *src,
                                                                uint16_t *hi, uint16_t *lo)
{
    const __m512i half = _mm512_set1_epi32(0x8000), keep = _mm512_set1_epi32((int)0xFFFF0000u);
    const __m512 a = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src));
    const __m512 b = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 16)));
    const __m512 ha = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(a), half), keep));
    const __m512 hb = _mm512_castsi512_ps(
        _mm512_and_si512(_mm512_add_epi32(_mm512_castps_si512(b), half), keep));
    /* both conversions are exact: ha, hb and the differences are bf16 values */
    _mm512_store_si512((void *)hi, (__m512i)_mm512_cvtne2ps_pbh(hb, ha));
    _mm512_store_si512((void *)lo,
                       (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(b, hb), _mm512_sub_ps(a, ha)));
}

/* Stage step s of nu float16 blocks (M rows each) as bf16 hi / lo tiles: unit u at
 * hi + u * 512 (M rows of 64 bytes). */
static inline __attribute__((always_inline)) void amx_stage_f16(
    const int nu, const char *const *a, size_t as, int M, int64_t s, uint16_t *hi, uint16_t *lo)
{
    for (int u = 0; u < nu; u++)
        for (int r = 0; r < M; r++)
            amx_split_f16((const uint16_t *)(a[u] + (size_t)r * as) + s * 32,
                          hi + u * 512 + r * 32, lo + u * 512 + r * 32);
    __asm__ volatile("" ::: "memory"); /* the tile loads below read the staged tiles */
}

/* Software prefetch of a later group: n candidates (p[i]: `rows` rows of `lpr` 64-byte lines,
 * the row stride apart), `lines` = rows * lpr lines each. Step s of S prefetches lines
 * [s * lines / S, (s + 1) * lines / S) of each, in address order, so the prefetches are spread
 * over the current group and run as a sequential stream (measured: a strided pattern, one
 * column of every row per step, halved the speed when the data was already in L2). */
typedef struct {
    const char *p[4];
    int n;
    int64_t rows, lpr, lines;
} amx_pf_t;

static inline __attribute__((always_inline)) void amx_prefetch(const amx_pf_t *pf, size_t as,
                                                               int64_t s, int64_t S)
{
    const int64_t l0 = s * pf->lines / S, l1 = (s + 1) * pf->lines / S;
    for (int i = 0; i < pf->n; i++) {
        int64_t r = l0 / pf->lpr, c = l0 % pf->lpr;
        for (int64_t l = l0; l < l1; l++) {
            __builtin_prefetch(pf->p[i] + (size_t)r * as + (size_t)c * 64, 0, 2);
            if (++c == pf->lpr) {
                c = 0;
                r++;
            }
        }
    }
}

/* nu (1..4) blocks of candidate vectors (row pointers a[u], row stride `as` bytes) against one
 * query block: C_u = A_u B after S steps, stored to cbuf + u * 256 (M rows of 16 floats).
 * P (paired, r_q <= 8): one B tile holds the query's hi (columns 0-7) and lo (8-15) halves, so
 * a step needs one tile product per block (two for float16) instead of two (three); the caller
 * adds columns n and n + 8. Otherwise B hi and B lo are separate tiles.
 * f16: the rows are float16, staged one step ahead through st (2 buffers x (hi, lo) x 4 x 512
 * uint16): step s + 1 is staged before the tiles of step s are loaded, so a tile load never
 * waits for the stores just issued. A step reads 64 bytes of every row for either dtype.
 * pf: a later group to prefetch, or NULL. */
static inline __attribute__((always_inline)) void amx_blocks(
    const int nu, const char *const *a, size_t as, int M, int64_t S, const uint16_t *bh,
    const uint16_t *bl, float *cbuf, const int f16, const int P, uint16_t *st,
    const amx_pf_t *pf)
{
    _tile_zero(0);
    if (nu > 1) _tile_zero(1);
    if (nu > 2) _tile_zero(2);
    if (nu > 3) _tile_zero(3);
    if (f16) amx_stage_f16(nu, a, as, M, 0, st, st + 4 * 512);
    /* tile numbers must be constants: one macro per accumulator C (A alternates tmm4 / tmm5) */
#define AMX_BF16(C, A, U)                                                                     \
    do {                                                                                      \
        _tile_loadd(A, a[U] + s * 64, as);                                                    \
        _tile_dpbf16ps(C, A, 6);                                                              \
        if (!P) _tile_dpbf16ps(C, A, 7);                                                      \
    } while (0)
#define AMX_F16(C, U)                                                                         \
    do {                                                                                      \
        _tile_loadd(4, sh + (U) * 512, 64);                                                   \
        _tile_loadd(5, sl + (U) * 512, 64);                                                   \
        _tile_dpbf16ps(C, 4, 6);                                                              \
        _tile_dpbf16ps(C, 5, 6);                                                              \
        if (!P) _tile_dpbf16ps(C, 4, 7);                                                      \
    } while (0)
    for (int64_t s = 0; s < S; s++) {
        if (pf) amx_prefetch(pf, as, s, S);
        _tile_loadd(6, bh + s * 512, 64);
        if (!P) _tile_loadd(7, bl + s * 512, 64);
        if (!f16) {
            AMX_BF16(0, 4, 0);
            if (nu > 1) AMX_BF16(1, 5, 1);
            if (nu > 2) AMX_BF16(2, 4, 2);
            if (nu > 3) AMX_BF16(3, 5, 3);
        } else {
            if (s + 1 < S) {
                uint16_t *nx = st + ((s + 1) & 1) * 8 * 512;
                amx_stage_f16(nu, a, as, M, s + 1, nx, nx + 4 * 512);
            }
            const uint16_t *sh = st + (s & 1) * 8 * 512, *sl = sh + 4 * 512;
            /* c_hi (q_hi + q_lo) + c_lo q_hi (paired: + c_lo q_lo, exact as well) */
            AMX_F16(0, 0);
            if (nu > 1) AMX_F16(1, 1);
            if (nu > 2) AMX_F16(2, 2);
            if (nu > 3) AMX_F16(3, 3);
            /* the staging of step s + 2 overwrites this buffer: keep it after these loads */
            __asm__ volatile("" ::: "memory");
        }
    }
#undef AMX_BF16
#undef AMX_F16
    _tile_stored(0, cbuf, 64);
    if (nu > 1) _tile_stored(1, cbuf + 256, 64);
    if (nu > 2) _tile_stored(2, cbuf + 512, 64);
    if (nu > 3) _tile_stored(3, cbuf + 768, 64);
}

static void amx_blocks_n(int nu, const char *const *a, size_t as, int M, int64_t S,
                         const uint16_t *bh, const uint16_t *bl, float *cbuf, int f16, int P,
                         uint16_t *st, const amx_pf_t *pf)
{
#define AMX_CASE(N, F, Q) amx_blocks(N, a, as, M, S, bh, bl, cbuf, F, Q, st, pf)
#define AMX_NU(F, Q)                                                                          \
    switch (nu) {                                                                             \
    case 1: AMX_CASE(1, F, Q); break;                                                         \
    case 2: AMX_CASE(2, F, Q); break;                                                         \
    case 3: AMX_CASE(3, F, Q); break;                                                         \
    default: AMX_CASE(4, F, Q); break;                                                        \
    }
    if (f16 && P) AMX_NU(1, 1)
    else if (f16) AMX_NU(1, 0)
    else if (P) AMX_NU(0, 1)
    else AMX_NU(0, 0)
#undef AMX_NU
#undef AMX_CASE
}

typedef struct {
    float *cbuf;  /* 4 x 16 x 16 floats */
    uint16_t *st; /* float16 staging: 2 buffers x (hi, lo) x 4 x 512 uint16 */
} amx_scratch_t;

/* Scores of nc candidates (docs[c]) against query qi: scores[c] = sum_i max_j <q_i, c_j>.
 * nc * nb <= 4, or nc == 1. pf: a later group to prefetch (with the first query block). */
static void amx_group(const job_t *jb, const amx_pack_t *pk, const char *const *docs, int nc,
                      int64_t qi, float *scores, amx_scratch_t *sc, const amx_pf_t *pf)
{
    const size_t as = (size_t)(jb->d_s1 * jb->esz);
    const int M = pk->M, f16 = jb->dtype == DT_F16;
    const int64_t nb = pk->nb, total = (int64_t)nc * nb;
    for (int c = 0; c < nc; c++) scores[c] = 0.0f;
    for (int64_t b = 0; b < pk->nqb; b++) {
        const size_t off = ((size_t)qi * (size_t)pk->nqb + (size_t)b) * pk->block;
        const uint16_t *bh = pk->hi + off, *bl = pk->lo ? pk->lo + off : NULL;
        __m512 mx[4];
        for (int c = 0; c < 4; c++) mx[c] = _mm512_set1_ps(-INFINITY);
        for (int64_t u0 = 0; u0 < total; u0 += 4) {
            const int nu = total - u0 < 4 ? (int)(total - u0) : 4;
            const char *a[4];
            int owner[4];
            for (int i = 0; i < nu; i++) {
                const int64_t u = u0 + i, c = u / nb, blk = u % nb;
                int64_t v0 = blk * 16;
                if (v0 + M > jb->r_c) v0 = jb->r_c - M; /* overlapping last block */
                a[i] = docs[c] + (size_t)v0 * as;
                owner[i] = (int)c;
            }
            amx_blocks_n(nu, a, as, M, pk->S, bh, bl, sc->cbuf, f16, pk->paired, sc->st, pf);
            pf = NULL;
            for (int i = 0; i < nu; i++) {
                const float *cu = sc->cbuf + i * 256;
                __m512 m;
                if (pk->paired) { /* <q_n, c_m> = C[m][n] + C[m][n + 8], then the max */
#define AMX_ROW(r) _mm512_add_ps(_mm512_load_ps(cu + (r) * 16), \
                                 _mm512_shuffle_f32x4(_mm512_load_ps(cu + (r) * 16),   \
                                                      _mm512_load_ps(cu + (r) * 16), 0x4E))
                    m = AMX_ROW(0);
                    for (int r = 1; r < M; r++) m = _mm512_max_ps(m, AMX_ROW(r));
#undef AMX_ROW
                } else {
                    m = _mm512_load_ps(cu);
                    for (int r = 1; r < M; r++) m = _mm512_max_ps(m, _mm512_load_ps(cu + r * 16));
                }
                mx[owner[i]] = _mm512_max_ps(mx[owner[i]], m);
            }
        }
        const int64_t valid = jb->r_q - b * 16 < 16 ? jb->r_q - b * 16 : 16;
        const __mmask16 k = (__mmask16)((1u << valid) - 1u);
        for (int c = 0; c < nc; c++) scores[c] += _mm512_mask_reduce_add_ps(k, mx[c]);
    }
}

/* Candidate of work item p: row p of the corpus (full mode) or the item's row. */
static inline const char *amx_doc(const job_t *jb, int64_t p)
{
    return jb->mode == MODE_FULL ? jb->d + (size_t)(p * jb->d_s0 * jb->esz) : item_ptr(jb, p);
}

static int run_range_amx(const job_t *jb, int64_t start, int64_t end)
{
    const amx_pack_t *pk = (const amx_pack_t *)jb->pack;
    amx_scratch_t sc;
    if (posix_memalign((void **)&sc.cbuf, 64, 4 * 256 * sizeof(float)) != 0) return -1;
    if (posix_memalign((void **)&sc.st, 64, 2 * 2 * 4 * 512 * sizeof(uint16_t)) != 0) {
        free(sc.cbuf);
        return -1;
    }
    /* tile state is per thread */
    amx_cfg_t cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64;
    for (int t = 0; t < 6; t++) cfg.rows[t] = (uint8_t)pk->M; /* C0..C3, A */
    cfg.rows[6] = cfg.rows[7] = 16;                            /* B hi, lo */
    _tile_loadconfig(&cfg);

    /* candidates per group: up to four blocks of 16 vectors in flight */
    const int cg = pk->nb >= 4 ? 1 : (int)(4 / pk->nb);
    const int pf_on = jb->pf_ahead < ((int64_t)1 << 62);
    const char *docs[4];
    float scores[4];
    amx_pf_t pf;
    pf.rows = jb->r_c;
    pf.lpr = (jb->D * jb->esz + 63) / 64;
    pf.lines = pf.rows * pf.lpr;
    for (int64_t p = start; p < end;) {
        /* a group: up to cg items, all for one query in pairwise / ids mode */
        const int64_t qi = jb->mode == MODE_FULL ? 0 : p / jb->m;
        const int64_t lim = jb->mode == MODE_FULL || (qi + 1) * jb->m > end ? end
                                                                             : (qi + 1) * jb->m;
        const int nc = lim - p < cg ? (int)(lim - p) : cg;
        pf.n = 0;
        for (int c = 0; c < nc; c++) {
            docs[c] = amx_doc(jb, p + c);
            const int64_t ahead = p + c + jb->pf_ahead;
            if (pf_on && ahead < end) pf.p[pf.n++] = amx_doc(jb, ahead);
        }
        if (jb->mode == MODE_FULL) {
            for (int64_t q = 0; q < jb->nq; q++) {
                amx_group(jb, pk, docs, nc, q, scores, &sc, q == 0 && pf.n ? &pf : NULL);
                for (int c = 0; c < nc; c++)
                    jb->out[q * jb->out_s0 + (p + c) * jb->out_s1] = scores[c];
            }
        } else {
            amx_group(jb, pk, docs, nc, qi, scores, &sc, pf.n ? &pf : NULL);
            for (int c = 0; c < nc; c++)
                jb->out[qi * jb->out_s0 + (p + c - qi * jb->m) * jb->out_s1] = scores[c];
        }
        p += nc;
    }
    _tile_release();
    free(sc.cbuf);
    free(sc.st);
    return 0;
}

#pragma GCC pop_options
