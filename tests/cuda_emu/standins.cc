/* standins.cc — the emulator's globals and scheduler (emu.h), and host
 * stand-ins for what the emulated .cu files call outside themselves:
 * backend_cuda.cu's lmc_cuda_reserve / upload / download / fail (device
 * memory is host memory here), matmul.cu's lmc_cuda_gemm (a plain loop over
 * the column-major contract, double accumulation, checking cuBLASLt's layout
 * rules) and lmc_cuda_to_bf16, and cub::DeviceRadixSort::SortKeys
 * (std::sort). */
#include "ops/cuda/common.cuh"

#include <map>

Emu E;
uint3 threadIdx, blockIdx, gridDim, blockDim;
long emu_launches;

/* x86-64 System V: save the callee-saved registers on this stack, switch
 * stacks, restore the other side's. */
asm(R"(
.text
.globl emu_switch
.type emu_switch,@function
emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
.section .note.GNU-stack,"",@progbits
.text
)");

static std::map<const void *, int> smem_optin;
void emu_smem_optin(const void *kernel, int bytes) {
    if (bytes > 227 * 1024) { fprintf(stderr, "emu: shared memory opt-in %d > 227 KiB\n", bytes); abort(); }
    smem_optin[kernel] = bytes;
}
int emu_smem_limit(const void *kernel) {
    auto it = smem_optin.find(kernel);
    return it == smem_optin.end() ? 48 * 1024 : std::max(it->second, 48 * 1024);
}

static const std::function<void()> *cur_body;
enum { STACK = 1 << 17 };

static void fiber_main() {
    (*cur_body)();
    E.done[E.cur] = 1;
    E.progress++;
    void *dead;
    emu_switch(&dead, E.sched_sp);
    abort(); /* never resumed */
}

void emu_run_grid(dim3 g, dim3 b, size_t smem, const std::function<void()> &body) {
    emu_launches++;
    const int threads = (int)(b.x * b.y * b.z);
    if (threads <= 0 || threads % 32 || threads > 1024) {
        fprintf(stderr, "emu: block of %u x %u x %u threads\n", b.x, b.y, b.z);
        abort();
    }
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.y > 65535 || g.z > 65535) {
        fprintf(stderr, "emu: bad grid %u x %u x %u\n", g.x, g.y, g.z);
        abort();
    }
    std::vector<unsigned char> sm(smem + 16);
    E.nthreads = threads;
    E.sp.resize(threads);
    while ((int)E.stacks.size() < threads) E.stacks.push_back((char *)malloc(STACK));
    E.slot.assign((size_t)threads * 8, 0);
    gridDim = {g.x, g.y, g.z};
    blockDim = {b.x, b.y, b.z};
    cur_body = &body;
    for (unsigned bz = 0; bz < g.z; bz++)
        for (unsigned by = 0; by < g.y; by++)
            for (unsigned bx = 0; bx < g.x; bx++) {
                E.smem = sm.data();
                memset(sm.data(), 0xff, smem);
                E.cnt.assign(1 + threads / 32, 0);
                E.gen.assign(1 + threads / 32, 0);
                E.done.assign(threads, 0);
                blockIdx = {bx, by, bz};
                for (int i = 0; i < threads; i++) { /* a frame emu_switch "returns" into fiber_main from */
                    uintptr_t top = ((uintptr_t)E.stacks[i] + STACK) & ~(uintptr_t)15;
                    void **p = (void **)(top - 8);
                    *--p = (void *)fiber_main;
                    for (int r = 0; r < 6; r++) *--p = nullptr;
                    E.sp[i] = p;
                }
                for (int left = threads; left > 0;) {
                    long before = E.progress;
                    for (int i = 0; i < threads; i++) {
                        if (E.done[i]) continue;
                        E.cur = i;
                        threadIdx = {i % b.x, i / b.x % b.y, i / (b.x * b.y)};
                        emu_switch(&E.sched_sp, E.sp[i]);
                        if (E.done[i]) left--;
                    }
                    if (left > 0 && E.progress == before) {
                        fprintf(stderr, "emu: deadlock in block (%u,%u,%u) of grid (%u,%u,%u): %d threads "
                                "wait at barriers that cannot complete\n", bx, by, bz, g.x, g.y, g.z, left);
                        abort();
                    }
                }
            }
}

/* ---- backend_cuda.cu stand-ins */
extern "C" void lmc_cuda_fail(const char *what, const char *msg, const char *file, int line) {
    fprintf(stderr, "lmc_cuda_fail: %s: %s at %s:%d\n", what, msg, file, line);
    abort();
}
void lmc_cuda_reserve(struct lmc_cuda_ctx *, void **buf, size_t *cap, size_t bytes) {
    if (bytes <= *cap) return;
    free(*buf);
    size_t n = lmc_cuda_al256(bytes);
    *buf = aligned_alloc(256, n);
    memset(*buf, 0xff, n); /* fresh device memory is garbage: NaN */
    *cap = bytes;
}
extern "C" void lmc_cuda_upload(void *, void *dst, const void *src, size_t b) { memcpy(dst, src, b); }
extern "C" void lmc_cuda_download(void *, void *dst, const void *src, size_t b) { memcpy(dst, src, b); }

/* ---- matmul.cu stand-ins */
long emu_gemm_calls;
static double ld_elem(const void *p, int64_t i, enum lmc_dtype dt) {
    if (dt == LMC_DTYPE_F32) return ((const float *)p)[i];
    if (dt == LMC_DTYPE_BF16) return emu_bf2f(((const uint16_t *)p)[i]);
    if (dt == LMC_DTYPE_F16) return __half2float(((const __half *)p)[i]);
    LMC_ASSERT(!"emu gemm: dtype");
    return 0;
}
void lmc_cuda_gemm(struct lmc_cuda_ctx *, bool ta, bool tb, int64_t m, int64_t n, int64_t k,
                   const void *A, int64_t lda, const void *B, int64_t ldb, float *D, int64_t ldd,
                   enum lmc_dtype dt, const float *bias, float beta) {
    emu_gemm_calls++;
    if (m <= 0 || n <= 0) return;
    LMC_ASSERT(k > 0); /* cuBLASLt: a leading dimension covers the stored matrix's rows */
    LMC_ASSERT(lda >= (ta ? k : m) && ldb >= (tb ? n : k) && ldd >= m);
    for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < m; i++) {
            double s = 0;
            for (int64_t p = 0; p < k; p++)
                s += ld_elem(A, ta ? p + i * lda : i + p * lda, dt) *
                     ld_elem(B, tb ? j + p * ldb : p + j * ldb, dt);
            float r = (float)s;
            if (bias) r += bias[i];
            D[i + j * ldd] = beta == 0 ? r : r + beta * D[i + j * ldd];
        }
}
void lmc_cuda_to_bf16(struct lmc_cuda_ctx *, __nv_bfloat16 *dst, const float *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) dst[i] = __float2bfloat16_rn(src[i]);
}

/* ---- cub stand-in */
cudaError_t cub::DeviceRadixSort::SortKeys(void *tmp, size_t &tmp_bytes, const uint64_t *in,
                                           uint64_t *out, int n, int begin_bit, int end_bit,
                                           cudaStream_t) {
    if (!tmp) { tmp_bytes = 256; return cudaSuccess; }
    LMC_ASSERT(begin_bit == 0 && end_bit == 64);
    std::vector<uint64_t> v(in, in + n);
    std::sort(v.begin(), v.end());
    if (n > 0) memcpy(out, v.data(), (size_t)n * 8);
    return cudaSuccess;
}
