/*
 * Budgeted MaxSim kernel body, included once per instruction set by _maxsim.c.
 *
 * Layout ("query vectors in the SIMD lanes"): the query prefix is packed as
 * Qt[block][d][lane] (lane = query vector, zero-padded; a zero query vector adds exactly 0),
 * and every candidate is read in its natural (Kc, D) layout. For a group of J candidate vectors
 * and every dim d:  acc[j] += Qt[d] * broadcast(c_j[d]).  A running max per lane over j, then a
 * horizontal sum of the lanes, gives sum_i max_j <q_i, c_j>.  Sums over d run in order with
 * fp32 FMAs, so results are exact to fp32 rounding (no reassociation, no fast-math).
 *
 * The including file defines:
 *   SFX            suffix for function names
 *   V, VW          vector type and its number of float lanes
 *   MAXJ           largest group of candidate vectors held in registers (16, 8 or 4)
 *   VZERO(), VNEGINF(), VLOAD(p), VBCAST(p), VFMA(a, b, c) (= a*b + c), VMAX(a, b), HSUM(v)
 *   COPY16_F32(dst, src), COPY16_BF16(dst, src), COPY16_F16(dst, src): 16 values to float32
 */

#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define FN(name) CAT(name, SFX)

/* Candidate vectors are staged in a blocked scratch S[db][j][16] (16 dims per block, zero-padded
 * past D), so every broadcast in the inner loop is a constant offset from one pointer. */
static inline __attribute__((always_inline)) void FN(dot_group)(
    const float *qt, const float *s, int64_t Db, V *mx, const int J)
{
    V acc[16];
#pragma GCC unroll 16
    for (int j = 0; j < J; j++) acc[j] = VZERO();
    for (int64_t db = 0; db < Db; db++) {
        const float *sb = s + db * J * 16;
        const float *qb = qt + db * 16 * VW;
#pragma GCC unroll 16
        for (int dd = 0; dd < 16; dd++) {
            const V q = VLOAD(qb + dd * VW);
#pragma GCC unroll 16
            for (int j = 0; j < J; j++) acc[j] = VFMA(q, VBCAST(sb + j * 16 + dd), acc[j]);
        }
    }
    V m = *mx;
#pragma GCC unroll 16
    for (int j = 0; j < J; j++) m = VMAX(m, acc[j]);
    *mx = m;
}

#if MAXJ >= 16
static void FN(dot16)(const float *qt, const float *s, int64_t Db, V *mx)
{ FN(dot_group)(qt, s, Db, mx, 16); }
#endif
#if MAXJ >= 8
static void FN(dot8)(const float *qt, const float *s, int64_t Db, V *mx)
{ FN(dot_group)(qt, s, Db, mx, 8); }
#endif
static void FN(dot4)(const float *qt, const float *s, int64_t Db, V *mx)
{ FN(dot_group)(qt, s, Db, mx, 4); }
static void FN(dot2)(const float *qt, const float *s, int64_t Db, V *mx)
{ FN(dot_group)(qt, s, Db, mx, 2); }
static void FN(dot1)(const float *qt, const float *s, int64_t Db, V *mx)
{ FN(dot_group)(qt, s, Db, mx, 1); }

/* Stage J rows (natural layout, `vbytes` apart) into the blocked scratch as float32. */
static void FN(stage)(float *s, const char *src, size_t vbytes, int J, int64_t D, int dtype)
{
    const int64_t Dfull = D / 16, Db = (D + 15) / 16;
    for (int jj = 0; jj < J; jj++) {
        const char *row = src + (size_t)jj * vbytes;
        for (int64_t db = 0; db < Dfull; db++) {
            float *dst = s + (db * J + jj) * 16;
            if (dtype == DT_F32)
                COPY16_F32(dst, (const float *)row + db * 16);
            else if (dtype == DT_BF16)
                COPY16_BF16(dst, (const uint16_t *)row + db * 16);
            else
                COPY16_F16(dst, (const uint16_t *)row + db * 16);
        }
        if (Db > Dfull) {
            float *dst = s + (Dfull * J + jj) * 16;
            const int64_t rem = D - Dfull * 16;
            for (int64_t t = 0; t < 16; t++) {
                float v = 0.0f;
                if (t < rem) {
                    const int64_t i = Dfull * 16 + t;
                    if (dtype == DT_F32) v = ((const float *)row)[i];
                    else if (dtype == DT_BF16) v = bf16_to_f32(((const uint16_t *)row)[i]);
                    else v = f16_to_f32(((const uint16_t *)row)[i]);
                }
                dst[t] = v;
            }
        }
    }
}

/* Score one candidate (natural layout, vectors `vstride` elements apart, dims contiguous)
 * against nqq packed queries; writes out[qq * out_stride]. */
static void FN(candidate)(const job_t *jb, const char *doc, const char *pf,
                          const float *qt_base, int64_t nqq, float *out, int64_t out_stride,
                          float *scratch, V *mx)
{
    const int64_t D = jb->D, Db = (D + 15) / 16, nqb = jb->nqb, r_c = jb->r_c;
    const size_t vbytes = (size_t)(jb->d_s1 * jb->esz);
    const int maxj = jb->maxj < MAXJ ? jb->maxj : MAXJ;
    for (int64_t t = 0; t < nqq * nqb; t++) mx[t] = VNEGINF();
    int64_t j = 0;
    while (j < r_c) {
        const int64_t rem = r_c - j;
        int J;
        if (rem >= 16 && maxj >= 16) J = 16;
        else if (rem >= 8 && maxj >= 8) J = 8;
        else if (rem >= 4) J = 4;
        else if (rem >= 2) J = 2;
        else J = 1;
        if (pf) prefetch_rows(jb, pf, j, J); /* spread over the candidate, not a burst */
        FN(stage)(scratch, doc + (size_t)j * vbytes, vbytes, J, D, jb->dtype);
        for (int64_t t = 0; t < nqq * nqb; t++) {
            const float *qt = qt_base + t * Db * 16 * VW;
            switch (J) {
#if MAXJ >= 16
            case 16: FN(dot16)(qt, scratch, Db, &mx[t]); break;
#endif
#if MAXJ >= 8
            case 8: FN(dot8)(qt, scratch, Db, &mx[t]); break;
#endif
            case 4: FN(dot4)(qt, scratch, Db, &mx[t]); break;
            case 2: FN(dot2)(qt, scratch, Db, &mx[t]); break;
            default: FN(dot1)(qt, scratch, Db, &mx[t]); break;
            }
        }
        j += J;
    }
    for (int64_t qq = 0; qq < nqq; qq++) {
        float s = 0.0f;
        for (int64_t b = 0; b < nqb; b++) s += HSUM(mx[qq * nqb + b]);
        out[qq * out_stride] = s;
    }
}

/* Work items [start, end): candidates (full mode) or flattened (query, candidate) pairs. */
static int FN(run_range)(const job_t *jb, int64_t start, int64_t end)
{
    const int64_t D = jb->D;
    float *scratch = NULL;
    V *mx = NULL;
    const int64_t qchunk = jb->mode == MODE_FULL ? jb->qchunk : 1;
    if (posix_memalign((void **)&scratch, 64, sizeof(float) * (size_t)(((D + 15) / 16) * 256)) != 0)
        return -1;
    if (posix_memalign((void **)&mx, 64, sizeof(V) * (size_t)(qchunk * jb->nqb)) != 0) {
        free(scratch);
        return -1;
    }
    const size_t qstride = (size_t)(jb->nqb * ((D + 15) / 16) * 16 * VW);
    if (jb->mode == MODE_FULL) {
        for (int64_t q0 = 0; q0 < jb->nq; q0 += qchunk) {
            const int64_t nqq = (jb->nq - q0) < qchunk ? (jb->nq - q0) : qchunk;
            for (int64_t k = start; k < end; k++) {
                const char *doc = jb->d + (size_t)(k * jb->d_s0 * jb->esz);
                const char *pf = k + jb->pf_ahead < end
                                     ? doc + (size_t)(jb->pf_ahead * jb->d_s0 * jb->esz)
                                     : NULL;
                FN(candidate)(jb, doc, pf, jb->qt + q0 * qstride, nqq,
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
            const char *doc = jb->d + (size_t)(row * jb->esz);
            const char *pf = p + jb->pf_ahead < end ? item_ptr(jb, p + jb->pf_ahead) : NULL;
            FN(candidate)(jb, doc, pf, jb->qt + qi * qstride, 1,
                          jb->out + qi * jb->out_s0 + k * jb->out_s1, 0, scratch, mx);
        }
    }
    free(scratch);
    free(mx);
    return 0;
}

#undef FN
#undef CAT
#undef CAT_
