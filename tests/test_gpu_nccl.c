/* test_gpu_nccl.c - the NCCL communicator on one rank (label `gpu`): an
 * all-reduce of a device buffer gives the expected sum (with one rank, the
 * buffer itself), and host-side collectives pass through. Run under
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
    double d = 1.5;
    CHECK(c.allreduce_f64(&c, &d, 1, &err) == 0 && d == 1.5 * c.size);
    cudaFree(dev);
    free(host);
    c.finalize(&c);
    return dms_check_finish();
}
