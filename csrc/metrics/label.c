// Connected-component labelling, 8-connected, two passes with union-find
// (see metrics.h: label8).
#include "metrics.h"

// Union-find over provisional labels keeps parent[x] < x for every non-root
// x (the smaller root wins a union), which the relabelling pass relies on.
static inline int32_t find_root(int32_t *parent, int32_t x) {
    while (parent[x] != x) {
        parent[x] = parent[parent[x]];  // path halving
        x = parent[x];
    }
    return x;
}

static inline int32_t unite(int32_t *parent, int32_t a, int32_t b) {
    a = find_root(parent, a);
    b = find_root(parent, b);
    if (a < b) {
        parent[b] = a;
        return a;
    }
    parent[a] = b;
    return b;
}

int32_t label8(int32_t *labels, int32_t *parent, const uint8_t *mask, int64_t H, int64_t W) {
    int32_t next = 1;
    parent[0] = 0;
    // Pass 1: provisional labels from the already-visited neighbours NW, N,
    // NE, W. A foreground N is already joined to NW, NE and W (each touches
    // it), so it decides alone; otherwise W or NW (joined to each other)
    // and NE, which neither of them touches.
    for (int64_t y = 0; y < H; y++) {
        const uint8_t *m = mask + y * W;
        int32_t *l = labels + y * W;
        const int32_t *up = y ? l - W : NULL;
        for (int64_t x = 0; x < W; x++) {
            if (!m[x]) {
                l[x] = 0;
                continue;
            }
            int32_t n = up ? up[x] : 0;
            if (!n) {
                int32_t w = x ? l[x - 1] : 0;
                if (!w && up && x) w = up[x - 1];
                int32_t ne = up && x + 1 < W ? up[x + 1] : 0;
                n = w && ne ? unite(parent, w, ne) : (w ? w : ne);
            }
            if (!n) {
                n = next++;
                parent[n] = n;
            }
            l[x] = n;
        }
    }
    // Pass 2: roots in ascending order get 1, 2, ...; every other label
    // takes the final id of its parent, already rewritten (parent < label).
    int32_t count = 0;
    for (int32_t k = 1; k < next; k++) parent[k] = parent[k] == k ? ++count : parent[parent[k]];
    for (int64_t i = 0; i < H * W; i++) labels[i] = parent[labels[i]];
    return count;
}
