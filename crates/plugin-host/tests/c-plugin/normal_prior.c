/* A popcosmos prior plugin written in C against the ABI of docs/plugins.md: the standard
 * normal in all 16 latent parameters (uniform in every θ bound; N ~ 𝒩(0, 1) is not a
 * realistic prior, this only proves the C layout). ln p = −½ Σ φᵢ² − 8 ln 2π.
 * Configuration "fail" makes create fail with a message.
 * Build: cc -std=c11 -O2 -shared -fPIC -o libc_normal_prior.so normal_prior.c -lm */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint32_t abi_version;
    uint32_t kind;
    const char *plugin_name;
    const char *plugin_version;
} PluginHeader;
typedef struct { uint8_t *ptr; size_t cap; size_t len; } ErrorBuf;
typedef void *Handle;
typedef struct {
    PluginHeader header;
    int32_t (*create)(const uint8_t *, size_t, Handle *, ErrorBuf *);
    void (*destroy)(Handle);
    int32_t (*name)(Handle, uint8_t *, size_t, size_t *, ErrorBuf *);
    int32_t (*dim)(Handle, size_t *, ErrorBuf *);
    int32_t (*log_prob)(Handle, const float *, size_t, float *, size_t, size_t *, ErrorBuf *);
    int32_t (*sample)(Handle, size_t, uint64_t, float *, size_t, size_t *, ErrorBuf *);
} PriorVTable;

enum { DIM = 16 };
static const char NAME[] = "c-normal";

static int32_t fail(ErrorBuf *err, const char *msg) {
    size_t n = strlen(msg);
    if (err) {
        memcpy(err->ptr, msg, n < err->cap ? n : err->cap);
        err->len = n;
    }
    return 1;
}

static int32_t create(const uint8_t *cfg, size_t len, Handle *out, ErrorBuf *err) {
    if (len == 4 && memcmp(cfg, "fail", 4) == 0) return fail(err, "C plugin: configuration 'fail' refused");
    *out = malloc(1);
    return *out ? 0 : fail(err, "out of memory");
}

static void destroy(Handle h) { free(h); }

static int32_t name(Handle h, uint8_t *buf, size_t cap, size_t *len, ErrorBuf *err) {
    (void)h; (void)err;
    size_t n = sizeof NAME - 1;
    memcpy(buf, NAME, n < cap ? n : cap);
    *len = n;
    return 0;
}

static int32_t dim(Handle h, size_t *out, ErrorBuf *err) {
    (void)h; (void)err;
    *out = DIM;
    return 0;
}

static int32_t log_prob(Handle h, const float *phi, size_t n, float *out, size_t cap,
                        size_t *out_len, ErrorBuf *err) {
    (void)h;
    if (cap < n) return fail(err, "output buffer too small");
    const double ln_2pi = 1.8378770664093453;
    for (size_t i = 0; i < n; i++) {
        double ss = 0.0;
        for (size_t k = 0; k < DIM; k++) ss += (double)phi[i * DIM + k] * phi[i * DIM + k];
        out[i] = (float)(-0.5 * ss - 8.0 * ln_2pi);
    }
    *out_len = n;
    return 0;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static int32_t sample(Handle h, size_t n, uint64_t seed, float *out, size_t cap,
                      size_t *out_len, ErrorBuf *err) {
    (void)h;
    if (cap < n * DIM) return fail(err, "output buffer too small");
    for (size_t i = 0; i < n * DIM; i += 2) {
        double u1 = ((splitmix64(&seed) >> 11) + 1) * 0x1.0p-53;
        double u2 = (splitmix64(&seed) >> 11) * 0x1.0p-53;
        double r = sqrt(-2.0 * log(u1)), a = 6.283185307179586 * u2;
        out[i] = (float)(r * cos(a));
        if (i + 1 < n * DIM) out[i + 1] = (float)(r * sin(a));
    }
    *out_len = n * DIM;
    return 0;
}

static const PriorVTable VTABLE = {
    {1, 2, "c-normal-prior", "0.1.0"}, create, destroy, name, dim, log_prob, sample,
};

const PluginHeader *popcosmos_plugin_entry(void) { return &VTABLE.header; }
