/* standins.cc — the emulator's globals and scheduler (emu.h), and the host
 * stand-in for cub::DeviceRadixSort::SortKeys (std::sort). The CUDA
 * runtime and cuBLASLt are modelled in cuda_runtime_model.cc and
 * cublaslt_model.cc; backend_cuda.cu and matmul.cu run as they are. */
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
