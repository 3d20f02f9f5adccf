/* test_gpu_nccl.c - the NCCL communicator on one rank (label `gpu`): an
 * all-reduce of a device buffer gives the expected sum (with one rank, the
 * buffer itself), also when started behind work on another stream
 * (iallreduce_f32 with a queue, as the backward starts it), and host-side
 * collectives pass through. Run under
 * `mpirun -np N` on N GPUs it checks the sum over N ranks. */
#include <cuda_runtime.h>
#include <stdlib.h>

#include "tests/check.h"
#include "train/nccl/comm_nccl.h"

int main(int argc, char **argv) {
    dms_comm c;
    dms_err err = {0};
    if (dms_comm_nccl(&c, &argc, &argv, &err) != 0) {
        CHECK_MSG(0, "%s (this suite is labelled gpu: run it on the device machine)", err.msg);
        return dms_check_finish();
    }
    const size_t n = 1 << 20;
    float *host = malloc(n * sizeof(float)), *dev = NULL;
    for (size_t i = 0; i < n; i++) host[i] = (float)(i % 1000) * 0.5f + (float)c.rank;
    cudaMalloc((void **)&dev, n * sizeof(float));
    cudaMemcpy(dev, host, n * sizeof(float), cudaMemcpyHostToDevice);
    CHECK_MSG(c.allreduce_f32(&c, dev, n, &err) == 0, "%s", err.msg);
    cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
    size_t bad = 0;
    const double rank_sum = (double)c.size * (c.size - 1) / 2.0;
    for (size_t i = 0; i < n; i++)
        bad += host[i] != (float)((double)(i % 1000) * 0.5 * c.size + rank_sum);
    CHECK_MSG(bad == 0, "%zu of %zu sums wrong", bad, n);
    /* the overlapped form: a sum queued behind work still running on
     * another stream (the backend's) reads what that work wrote. The
     * stream is kept busy with copies first, so a sum that did not wait
     * for it would read the zeros. */
    float *src = NULL, *big = NULL, *big2 = NULL;
    const size_t nb = (size_t)16 << 20;
    cudaStream_t q;
    CHECK(cudaStreamCreate(&q) == cudaSuccess);
    CHECK(cudaMalloc((void **)&src, n * sizeof(float)) == cudaSuccess &&
          cudaMalloc((void **)&big, nb * sizeof(float)) == cudaSuccess &&
          cudaMalloc((void **)&big2, nb * sizeof(float)) == cudaSuccess);
    for (size_t i = 0; i < n; i++) host[i] = (float)(i % 777) + (float)c.rank;
    cudaMemcpy(src, host, n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemset(dev, 0, n * sizeof(float));
    for (int k = 0; k < 20; k++) cudaMemcpyAsync(big2, big, nb * sizeof(float), cudaMemcpyDeviceToDevice, q);
    cudaMemcpyAsync(dev, src, n * sizeof(float), cudaMemcpyDeviceToDevice, q);
    CHECK_MSG(c.iallreduce_f32 && c.iallreduce_f32(&c, dev, n, (void *)q, &err) == 0, "%s", err.msg);
    CHECK_MSG(c.wait_all(&c, &err) == 0, "%s", err.msg);
    cudaMemcpy(host, dev, n * sizeof(float), cudaMemcpyDeviceToHost);
    bad = 0;
    for (size_t i = 0; i < n; i++) bad += host[i] != (float)((double)(i % 777) * c.size + rank_sum);
    CHECK_MSG(bad == 0, "overlapped sum: %zu of %zu wrong (did it wait for the producing stream?)", bad, n);
    cudaFree(src);
    cudaFree(big);
    cudaFree(big2);
    cudaStreamDestroy(q);
    double d = 1.5;
    CHECK(c.allreduce_f64(&c, &d, 1, &err) == 0 && d == 1.5 * c.size);
    cudaFree(dev);
    free(host);
    c.finalize(&c);
    return dms_check_finish();
}
