// A CUDA kernel for the GPU proof (scripts/device/prove-containers.sh): adds two vectors on the GPU and
// checks the sum on the CPU. Built there twice: for the GPU's architecture (SASS) and as PTX only, which
// the driver compiles at load time (libnvidia-ptxjitcompiler must be in the container for that).
#include <cstdio>
#include <cuda_runtime.h>

__global__ void vadd(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

#define CHECK(call)                                                                   \
    do {                                                                              \
        cudaError_t err = (call);                                                     \
        if (err != cudaSuccess) {                                                     \
            std::fprintf(stderr, "vadd: %s: %s\n", #call, cudaGetErrorString(err));   \
            return 1;                                                                 \
        }                                                                             \
    } while (0)

int main() {
    const int n = 1 << 20;
    static float a[1 << 20], b[1 << 20], c[1 << 20];
    for (int i = 0; i < n; i++) { a[i] = float(i); b[i] = float(2 * i); }
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, n * sizeof(float)));
    CHECK(cudaMalloc(&db, n * sizeof(float)));
    CHECK(cudaMalloc(&dc, n * sizeof(float)));
    CHECK(cudaMemcpy(da, a, n * sizeof(float), cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b, n * sizeof(float), cudaMemcpyHostToDevice));
    vadd<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(c, dc, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) {
        if (c[i] != float(3 * i)) { std::fprintf(stderr, "vadd: wrong sum at %d\n", i); return 1; }
    }
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    int driver = 0;
    CHECK(cudaDriverGetVersion(&driver));
    std::printf("vadd ok: %d sums on %s (sm_%d%d), CUDA driver API %d\n", n, prop.name, prop.major, prop.minor, driver);
    return 0;
}
