// Template for sort.c: the radix sort on keys of type KEY, named FUNC, with
// its serial LSD part named LSD.
//
// Only the bits that vary between keys are sorted on (one read finds them):
// scores from a narrow range share their top bits, float32 or integer
// scores as float64 their low ones, and fewer, narrower digits move faster.
//
// Large inputs: one threaded MSD pass on the top MSD_BITS varying bits
// distributes the keys (stably) into buckets, which threads then take one
// at a time (dynamic schedule: no barrier, so a thread preempted on a
// shared machine holds nobody up) and finish with a serial LSD sort, inside
// the cache for all but very skewed data.

// Stable LSD sort of key (n,) on bits [low, top) (bits above top must be
// equal, those below low are ignored), tmp (n,) scratch; pay/ptmp the
// same for the payload, or pay == NULL. cnt is (RADIX_SIZE,) scratch.
// The result ends in key.
static void LSD(KEY *key, KEY *tmp, uint32_t *pay, uint32_t *ptmp, int64_t n, int low, int top,
                int64_t *cnt) {
    const int max_bits = n < RADIX_SMALL ? 8 : RADIX_BITS;
    const int passes = (top - low + max_bits - 1) / max_bits;
    if (passes <= 0) return;
    const int bits = (top - low + passes - 1) / passes, size = 1 << bits;
    const KEY mask = (KEY)(size - 1);
    KEY *src = key, *dst = tmp;
    uint32_t *psrc = pay, *pdst = ptmp;
    for (int shift = low; shift < top; shift += bits) {
        memset(cnt, 0, (size_t)size * sizeof *cnt);
        for (int64_t i = 0; i < n; i++) cnt[(src[i] >> shift) & mask]++;
        for (int64_t b = 0, sum = 0; b < size; b++) {
            int64_t v = cnt[b];
            cnt[b] = sum;
            sum += v;
        }
        if (psrc) {
            for (int64_t i = 0; i < n; i++) {
                int64_t j = cnt[(src[i] >> shift) & mask]++;
                dst[j] = src[i];
                pdst[j] = psrc[i];
            }
        } else {
            for (int64_t i = 0; i < n; i++) dst[cnt[(src[i] >> shift) & mask]++] = src[i];
        }
        KEY *k = src; src = dst; dst = k;
        uint32_t *p = psrc; psrc = pdst; pdst = p;
    }
    if (src != key) {
        memcpy(key, src, (size_t)n * sizeof *key);
        if (pay) memcpy(pay, psrc, (size_t)n * sizeof *pay);
    }
}

// The varying bits of key (n,) as [*low, *top).
static void VARYING(const KEY *key, int64_t n, int *low, int *top) {
    KEY o = 0, a = (KEY)~(KEY)0;
    for (int64_t i = 0; i < n; i++) o |= key[i], a &= key[i];
    KEY vary = o ^ a;
    *top = *low = 0;
    while (*top < 8 * (int)sizeof(KEY) && (vary >> *top)) ++*top;
    while (*low < *top && !((vary >> *low) & 1)) ++*low;
}

int FUNC(KEY *key, KEY *tmp, uint32_t *pay, uint32_t *ptmp, int64_t n) {
    int64_t *cnt = NULL;
    if (n < MSD_MIN) {
        int low, top;
        if (!(cnt = malloc(RADIX_SIZE * sizeof *cnt))) return TN_ENOMEM;
        VARYING(key, n, &low, &top);
        LSD(key, tmp, pay, ptmp, n, low, top, cnt);
        free(cnt);
        return TN_OK;
    }
    const int nt = omp_get_max_threads(), nb = 1 << MSD_BITS;
    // Per thread: MSD counts, then LSD scratch counts; OR and AND.
    cnt = malloc((size_t)nt * (nb + RADIX_SIZE) * sizeof *cnt);
    KEY *any = malloc((size_t)nt * 2 * sizeof *any);
    if (!cnt || !any) {
        free(cnt);
        free(any);
        return TN_ENOMEM;
    }
    int low = 0, top = 0, shift = 0;
#pragma omp parallel num_threads(nt)
    {
        const int T = omp_get_num_threads(), t = omp_get_thread_num();
        const int64_t lo = n * t / T, hi = n * (t + 1) / T;
        int64_t *c = cnt + (int64_t)nb * t;
        KEY o = 0, a = (KEY)~(KEY)0;
        for (int64_t i = lo; i < hi; i++) o |= key[i], a &= key[i];
        any[2 * t] = o, any[2 * t + 1] = a;
#pragma omp barrier
#pragma omp single
        {
            KEY o = 0, a = (KEY)~(KEY)0;
            for (int u = 0; u < T; u++) o |= any[2 * u], a &= any[2 * u + 1];
            KEY vary = o ^ a;
            while (top < 8 * (int)sizeof(KEY) && (vary >> top)) top++;
            while (low < top && !((vary >> low) & 1)) low++;
            shift = TN_MAX(low, top - MSD_BITS);
        }
        const KEY mask = (KEY)(nb - 1);
        memset(c, 0, (size_t)nb * sizeof *c);
        for (int64_t i = lo; i < hi; i++) c[(key[i] >> shift) & mask]++;
#pragma omp barrier
#pragma omp single
        {
            int64_t sum = 0;
            for (int b = 0; b < nb; b++)
                for (int u = 0; u < T; u++) {
                    int64_t v = cnt[(int64_t)nb * u + b];
                    cnt[(int64_t)nb * u + b] = sum;
                    sum += v;
                }
        }
        if (pay) {
            for (int64_t i = lo; i < hi; i++) {
                int64_t j = c[(key[i] >> shift) & mask]++;
                tmp[j] = key[i];
                ptmp[j] = pay[i];
            }
        } else {
            for (int64_t i = lo; i < hi; i++) tmp[c[(key[i] >> shift) & mask]++] = key[i];
        }
#pragma omp barrier
        // After the scatter, thread T-1's counter for bucket b is where
        // bucket b ends; bucket b starts where bucket b - 1 ends.
        const int64_t *end = cnt + (int64_t)nb * (T - 1);
        int64_t *scratch = cnt + (int64_t)nb * nt + (int64_t)RADIX_SIZE * t;
#pragma omp for schedule(dynamic, 16)
        for (int b = 0; b < nb; b++) {
            int64_t s = b ? end[b - 1] : 0, m = end[b] - s;
            if (m <= 0) continue;
            int bl, bt;
            VARYING(tmp + s, m, &bl, &bt);
            if (bl < bt)
                LSD(tmp + s, key + s, pay ? ptmp + s : NULL, pay ? pay + s : NULL, m, bl, bt,
                    scratch);
            memcpy(key + s, tmp + s, (size_t)m * sizeof *key);
            if (pay) memcpy(pay + s, ptmp + s, (size_t)m * sizeof *pay);
        }
    }
    free(cnt);
    free(any);
    return TN_OK;
}
