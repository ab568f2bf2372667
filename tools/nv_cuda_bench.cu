// CUDA's own figures for tools.nv_hw_check: launch latency of an almost empty kernel through
// cuLaunchKernel (launch + wait, median of LAUNCHES) and cudaMemcpy bandwidth between pinned host
// memory (cudaMallocHost) and device memory, both directions. Prints one JSON object.
// Built on the GPU machine by tools/nv_hw_check.py: nvcc -O2 -o bench nv_cuda_bench.cu -lcuda
#include <cuda.h>
#include <cuda_runtime.h>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

extern "C" __global__ void store_one(unsigned *out, unsigned value) {
    if (threadIdx.x == 0) *out = value;
}

static int check(cudaError_t status, const char *what) {
    if (status != cudaSuccess) {
        std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(status));
        return 1;
    }
    return 0;
}

int main() {
    const int launches = 1000;
    const size_t bytes = size_t(256) << 20;
    unsigned *out = nullptr;
    if (check(cudaFree(0), "context") || check(cudaMalloc(&out, 4), "cudaMalloc")) return 1;
    CUfunction function;
    cudaFunction_t runtime_function;
    if (check(cudaGetFuncBySymbol(&runtime_function, (const void *)store_one), "cudaGetFuncBySymbol"))
        return 1;
    function = (CUfunction)runtime_function;
    std::vector<double> times;
    for (int i = 0; i < launches; i++) {
        unsigned value = i;
        void *args[] = {&out, &value};
        auto start = std::chrono::steady_clock::now();
        if (cuLaunchKernel(function, 1, 1, 1, 1, 1, 1, 0, 0, args, nullptr) != CUDA_SUCCESS) {
            std::fprintf(stderr, "cuLaunchKernel failed\n");
            return 1;
        }
        if (check(cudaDeviceSynchronize(), "cudaDeviceSynchronize")) return 1;
        auto elapsed = std::chrono::steady_clock::now() - start;
        times.push_back(std::chrono::duration<double, std::micro>(elapsed).count());
    }
    std::sort(times.begin(), times.end());
    void *host = nullptr;
    void *device = nullptr;
    if (check(cudaMallocHost(&host, bytes), "cudaMallocHost")) return 1;
    if (check(cudaMalloc(&device, bytes), "cudaMalloc")) return 1;
    double best_in = 1e30, best_out = 1e30;
    for (int round = 0; round < 5; round++) {
        auto start = std::chrono::steady_clock::now();
        if (check(cudaMemcpy(device, host, bytes, cudaMemcpyHostToDevice), "cudaMemcpy in")) return 1;
        auto middle = std::chrono::steady_clock::now();
        if (check(cudaMemcpy(host, device, bytes, cudaMemcpyDeviceToHost), "cudaMemcpy out")) return 1;
        auto end = std::chrono::steady_clock::now();
        best_in = std::min(best_in, std::chrono::duration<double>(middle - start).count());
        best_out = std::min(best_out, std::chrono::duration<double>(end - middle).count());
    }
    double mib = double(bytes) / (1 << 20);
    std::printf("{\"launch_latency_us\": %.2f, \"copy_in_MiB_s\": %.1f, \"copy_out_MiB_s\": %.1f}\n",
                times[times.size() / 2], mib / best_in, mib / best_out);
    return 0;
}
