/* What a lookup hit can cost at 200,000 entries on this machine, by index
 * layout (issue 16: target 100 ns). A model, not fmcache's reader: the same
 * keys (~80-byte site-packages-like paths), a 2^19-slot linear-probing table
 * (fmcache's load), keys read in sequence from a tape of random picks, so
 * consecutive lookups are independent as in bench/micro.
 *
 *   A  format 5: u64 slot (entry index, path offset) -> 72-byte entry and
 *      the path string, read at once; every slot probed reads an entry.
 *   A6 format 6: A with 8 bits of the hash in the slot (24-bit index): a
 *      probe passes other slots without reading their entries.
 *   B  16-byte slot (index, path offset, hash tag, length): the string is
 *      compared without the entry; other slots are skipped by their tag.
 *   C  u64 slot (hash tag, record) -> one record: entry followed by its
 *      path, so one place in memory holds both.
 *   D  no slots: records grouped by the top 18 bits of the hash behind a
 *      1 MiB directory of group offsets: one read from memory per hit.
 *   slot  the slot read alone (the floor of A, B and C's first step).
 *
 * Run with HUGE=1 to ask for transparent huge pages on every table
 * (anonymous memory here; a staged index is a tmpfs file, which gets them
 * only where the administrator enabled shmem huge pages). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define N 200000
#define PL 80
#define CAP 524288u /* power of two, load 0.38 */
#define K 18        /* D: directory of 2^K groups */

typedef struct {
    uint64_t hash;
    uint32_t off, len;
    uint32_t rest[14];
} Entry; /* 72 bytes, as fmcache's */

static uint64_t hash(const char *p, size_t n) {
    uint64_t h = 1469598103934665603ull;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 31;
    }
    for (; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    return h ^ (h >> 32);
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

static void *table(size_t n) {
    size_t a = 2u << 20;
    n = (n + a - 1) & ~(a - 1);
    void *p = aligned_alloc(a, n);
    if (!p) abort();
    if (getenv("HUGE")) madvise(p, n, MADV_HUGEPAGE);
    memset(p, 0, n);
    return p;
}

static char keys[N][PL + 1];

int main(void) {
    srand(1);
    size_t mask = CAP - 1, recsz = (72 + PL + 7) & ~7u;
    for (int i = 0; i < N; i++)
        snprintf(keys[i], PL + 1, "/opt/site/lib/python3.11/site-packages/pkg%05d/sub%03d/module_%07d_file.py",
                 rand() % 3000, rand() % 500, i);
    int *perm = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) perm[i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = rand() % (i + 1), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    Entry *ent = table(sizeof(Entry) * N);
    char *str = table((size_t)N * PL * 2);
    size_t so = 0;
    for (int k = 0; k < N; k++) { /* strings in another order than entries */
        int i = perm[k];
        size_t l = strlen(keys[i]);
        memcpy(str + so, keys[i], l);
        ent[i].hash = hash(keys[i], l);
        ent[i].off = so;
        ent[i].len = l;
        so += l;
    }
    char *rec = table(recsz * N);
    for (int i = 0; i < N; i++) {
        memcpy(rec + recsz * i, &ent[i], sizeof(Entry));
        memcpy(rec + recsz * i + 72, keys[i], ent[i].len);
    }
    uint64_t *slA = table(CAP * 8), *slA6 = table(CAP * 8), *slC = table(CAP * 8);
    struct S16 { uint32_t idx, off, tag, len; } *slB = table(CAP * 16);
    for (int i = 0; i < N; i++) {
        uint64_t h = ent[i].hash;
        size_t s = h & mask;
        while (slA[s]) s = (s + 1) & mask;
        slA[s] = ((uint64_t)ent[i].off << 32) | (uint64_t)(i + 1);
        for (s = h & mask; slA6[s]; s = (s + 1) & mask) {}
        slA6[s] = ((uint64_t)ent[i].off << 32) | ((h >> 56) << 24) | (uint64_t)(i + 1);
        for (s = h & mask; slB[s].idx; s = (s + 1) & mask) {}
        slB[s] = (struct S16){i + 1, ent[i].off, (uint32_t)(h >> 32), ent[i].len};
        for (s = h & mask; slC[s]; s = (s + 1) & mask) {}
        slC[s] = ((h >> 32) << 32) | (uint64_t)(i + 1);
    }
    /* D: records sorted by group (counting sort), directory of offsets. */
    uint32_t *dir = table(((1u << K) + 1) * 4), *cnt = calloc((1u << K) + 1, 4);
    int *ord = malloc(sizeof(int) * N);
    for (int i = 0; i < N; i++) cnt[(ent[i].hash >> (64 - K)) + 1]++;
    for (uint32_t g = 0; g < (1u << K); g++) cnt[g + 1] += cnt[g];
    for (int i = 0; i < N; i++) ord[cnt[ent[i].hash >> (64 - K)]++] = i;
    char *recD = table(recsz * N);
    size_t ro = 0;
    uint32_t gi = 0;
    for (int r = 0; r < N; r++) {
        int i = ord[r];
        uint32_t g = ent[i].hash >> (64 - K);
        while (gi <= g) dir[gi++] = ro / 8;
        memcpy(recD + ro, &ent[i], sizeof(Entry));
        memcpy(recD + ro + 72, keys[i], ent[i].len);
        ro += (72 + ent[i].len + 7) & ~7u;
    }
    while (gi <= (1u << K)) dir[gi++] = ro / 8;

    int T = 1000000;
    char *tape = malloc((size_t)T * (PL + 1));
    for (int i = 0; i < T; i++) strcpy(tape + (size_t)i * (PL + 1), keys[rand() % N]);

    for (int round = 0; round < 5; round++) {
        long found = 0, hits[6] = {0};
        double t[6], t0;
#define LOOP(n, ...)                                               \
    t0 = now();                                                    \
    for (int q = 0; q < T; q++) {                                  \
        const char *k = tape + (size_t)q * (PL + 1);               \
        size_t l = strlen(k);                                      \
        uint64_t h = hash(k, l);                                   \
        __VA_ARGS__                                                \
    }                                                              \
    t[n] = (now() - t0) / T;
        LOOP(0, for (size_t s = h & mask; slA[s]; s = (s + 1) & mask) {
            uint32_t i = (uint32_t)slA[s] - 1, off = slA[s] >> 32;
            Entry *e = &ent[i];
            if (e->hash == h && e->off == off && e->len == l && !memcmp(str + off, k, l)) { hits[0]++; found += i; break; }
        })
        LOOP(1, for (size_t s = h & mask; slB[s].idx; s = (s + 1) & mask) {
            struct S16 b = slB[s];
            if (b.tag == (uint32_t)(h >> 32) && b.len == l && !memcmp(str + b.off, k, l) && ent[b.idx - 1].hash == h) { hits[1]++; found += b.idx; break; }
        })
        LOOP(2, for (size_t s = h & mask; slC[s]; s = (s + 1) & mask) {
            if ((slC[s] >> 32) != (h >> 32)) continue;
            Entry *e = (Entry *)(rec + recsz * ((uint32_t)slC[s] - 1));
            if (e->len == l && !memcmp((char *)e + 72, k, l)) { hits[2]++; found += e->off; break; }
        })
        LOOP(3, {
            uint32_t g = h >> (64 - K);
            for (size_t o = (size_t)dir[g] * 8, end = (size_t)dir[g + 1] * 8; o < end;) {
                Entry *e = (Entry *)(recD + o);
                if (e->hash == h && e->len == l && !memcmp(recD + o + 72, k, l)) { hits[3]++; found += o; break; }
                o += (72 + e->len + 7) & ~7u;
            }
        })
        LOOP(4, { found += slA[h & mask]; hits[4]++; })
        LOOP(5, for (size_t s = h & mask; slA6[s]; s = (s + 1) & mask) {
            uint64_t b = slA6[s];
            if (((b >> 24) & 0xff) != (h >> 56)) continue;
            uint32_t i = (uint32_t)(b & 0xffffff) - 1, off = b >> 32;
            Entry *e = &ent[i];
            if (e->hash == h && e->off == off && e->len == l && !memcmp(str + off, k, l)) { hits[5]++; found += i; break; }
        })
        for (int i = 0; i < 6; i++)
            if (hits[i] != T) { fprintf(stderr, "layout %d found %ld of %d\n", i, hits[i], T); return 1; }
        printf("round %d: A %.1f  A6 %.1f  B %.1f  C %.1f  D %.1f  slot %.1f ns per hit (%ld)\n", round, t[0], t[5], t[1], t[2], t[3], t[4], found & 1);
    }
    return 0;
}
