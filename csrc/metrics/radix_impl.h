// Template for sort.c: one LSD radix sort on keys of type KEY, named FUNC.
// RADIX_BITS-bit digits (8-bit below RADIX_SMALL keys, where clearing and
// summing 2^11 counters per pass would dominate); a digit on which every key
// agrees costs one read, no move.
// Threads each own a fixed slice of the array; the scatter offsets are
// prefix sums over (digit, thread), so every pass is stable. After an odd
// number of moves the data is copied back into key.
int FUNC(KEY *key, KEY *tmp, uint32_t *pay, uint32_t *ptmp, int64_t n) {
    const int nt = n < (1 << 16) ? 1 : omp_get_max_threads();
    const int bits = n < RADIX_SMALL ? 8 : RADIX_BITS, size = 1 << bits;
    const KEY mask = (KEY)(size - 1);
    int64_t *cnt = malloc((size_t)nt * RADIX_SIZE * sizeof *cnt);
    if (!cnt) return TN_ENOMEM;
    KEY *src = key, *dst = tmp;
    uint32_t *psrc = pay, *pdst = ptmp;
    int skip = 0;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        int T = omp_get_num_threads(), t = omp_get_thread_num();
        int64_t lo = n * t / T, hi = n * (t + 1) / T;
        int64_t *c = cnt + RADIX_SIZE * t;
        for (int shift = 0; shift < 8 * (int)sizeof(KEY); shift += bits) {
            memset(c, 0, (size_t)size * sizeof *c);
            for (int64_t i = lo; i < hi; i++) c[(src[i] >> shift) & mask]++;
#pragma omp barrier
#pragma omp single
            {
                int64_t sum = 0;
                skip = 0;
                for (int b = 0; b < size; b++) {
                    int64_t total = 0;
                    for (int u = 0; u < T; u++) {
                        int64_t v = cnt[RADIX_SIZE * u + b];
                        cnt[RADIX_SIZE * u + b] = sum;
                        sum += v;
                        total += v;
                    }
                    if (total == n) skip = 1;
                }
            }
            if (!skip) {
                const KEY *s = src;
                KEY *d = dst;
                if (psrc) {
                    const uint32_t *ps = psrc;
                    uint32_t *pd = pdst;
                    for (int64_t i = lo; i < hi; i++) {
                        int64_t j = c[(s[i] >> shift) & mask]++;
                        d[j] = s[i];
                        pd[j] = ps[i];
                    }
                } else {
                    for (int64_t i = lo; i < hi; i++) d[c[(s[i] >> shift) & mask]++] = s[i];
                }
#pragma omp barrier
#pragma omp single
                {
                    KEY *k = src; src = dst; dst = k;
                    uint32_t *p = psrc; psrc = pdst; pdst = p;
                }
            }
        }
        if (src != key) {
            memcpy(key + lo, src + lo, (size_t)(hi - lo) * sizeof *key);
            if (pay) memcpy(pay + lo, psrc + lo, (size_t)(hi - lo) * sizeof *pay);
        }
    }
    free(cnt);
    return TN_OK;
}
