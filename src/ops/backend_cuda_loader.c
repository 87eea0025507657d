/* backend_cuda_loader.c — the CUDA backend's entry points as liblmc sees
 * them. The kernels live in a separate shared module, liblmc_cuda.so
 * (built from src/ops/cuda/ when nvcc is present), opened with dlopen when
 * first asked for. So lmc runs on machines without the CUDA runtime, and
 * the CUDA libraries' thread-local storage (cuBLASLt alone has 92 KiB) is
 * not carved out of every thread's stack: civetweb's worker threads have
 * 100 KiB stacks and could not start with it. The module is looked up in
 * $LMC_CUDA_MODULE, next to the executable, then on the library path. No
 * state is kept here: dlopen reference-counts and returns the same handle;
 * the module is never unloaded (the CUDA runtime does not support it). */
#include "ops/backend_cuda.h"
#include "core/core.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LMC_CUDA_MODULE_NAME "liblmc_cuda.so"

/* Opens the module; NULL (with the reason in why) when there is none. */
static void *cuda_module(char *why, size_t cap) {
    const char *env = getenv("LMC_CUDA_MODULE");
    void *h = NULL;
    if (env && *env) {
        h = dlopen(env, RTLD_NOW | RTLD_LOCAL);
    } else {
        char exe[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        if (n > 0) {
            exe[n] = 0;
            char *slash = strrchr(exe, '/');
            if (slash && (size_t)(slash - exe) + sizeof LMC_CUDA_MODULE_NAME + 1 < sizeof exe) {
                strcpy(slash + 1, LMC_CUDA_MODULE_NAME);
                h = dlopen(exe, RTLD_NOW | RTLD_LOCAL);
            }
        }
        if (!h) h = dlopen(LMC_CUDA_MODULE_NAME, RTLD_NOW | RTLD_LOCAL);
    }
    if (!h && why) {
        const char *e = dlerror();
        snprintf(why, cap, "%s", e ? e : "not found");
    }
    return h;
}

static void *cuda_sym(const char *name, char *why, size_t cap) {
    void *h = cuda_module(why, cap);
    if (!h) return NULL;
    void *f = dlsym(h, name);
    if (!f && why) snprintf(why, cap, "%s: symbol %s missing", LMC_CUDA_MODULE_NAME, name);
    return f;
}

int lmc_cuda_device_count(void) {
    int (*f)(void) = (int (*)(void))cuda_sym("lmc_cuda_device_count", NULL, 0);
    return f ? f() : 0;
}

lmc_status lmc_backend_cuda_init(struct lmc_backend *be, int device, lmc_err *err) {
    char why[512];
    lmc_status (*f)(struct lmc_backend *, int, lmc_err *) =
        (lmc_status(*)(struct lmc_backend *, int, lmc_err *))cuda_sym("lmc_backend_cuda_init", why,
                                                                       sizeof why);
    if (!f) {
        memset(be, 0, sizeof *be);
        return lmc_err_set(err, LMC_ERR_UNSUPPORTED,
                           "no CUDA backend: cannot load %s (%s); build lmc where nvcc is "
                           "installed, or set LMC_CUDA_MODULE", LMC_CUDA_MODULE_NAME, why);
    }
    return f(be, device, err);
}

void lmc_backend_cuda_free(struct lmc_backend *be) {
    void (*f)(struct lmc_backend *) =
        (void (*)(struct lmc_backend *))cuda_sym("lmc_backend_cuda_free", NULL, 0);
    if (f) f(be);
    else if (be) memset(be, 0, sizeof *be);
}

void lmc_backend_cuda_set_fp32_attention(struct lmc_backend *be, bool on) {
    void (*f)(struct lmc_backend *, bool) =
        (void (*)(struct lmc_backend *, bool))cuda_sym("lmc_backend_cuda_set_fp32_attention", NULL, 0);
    if (f) f(be, on);
}

void lmc_backend_cuda_set_train_bf16(struct lmc_backend *be, bool on) {
    void (*f)(struct lmc_backend *, bool) =
        (void (*)(struct lmc_backend *, bool))cuda_sym("lmc_backend_cuda_set_train_bf16", NULL, 0);
    if (f) f(be, on);
}

size_t lmc_backend_cuda_mem_used(const struct lmc_backend *be) {
    size_t (*f)(const struct lmc_backend *) =
        (size_t(*)(const struct lmc_backend *))cuda_sym("lmc_backend_cuda_mem_used", NULL, 0);
    return f ? f(be) : 0;
}

void lmc_backend_cuda_set_kvq(struct lmc_backend *be) {
    void (*f)(struct lmc_backend *) =
        (void (*)(struct lmc_backend *))cuda_sym("lmc_backend_cuda_set_kvq", NULL, 0);
    if (f) f(be);
}

void lmc_backend_cuda_set_kvq_paged(struct lmc_backend *be, int fmt) {
    void (*f)(struct lmc_backend *, int) =
        (void (*)(struct lmc_backend *, int))cuda_sym("lmc_backend_cuda_set_kvq_paged", NULL, 0);
    if (f) f(be, fmt);
}
