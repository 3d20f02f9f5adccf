/* model_random.h - a model at the real shapes of a config.json with random
 * weights instead of loaded ones: bench/models holds the published configs
 * of the supported families but no weights, and a training step, a memory
 * plan or a benchmark at real shapes needs only the shapes. With fill = 0
 * the weights are allocated and left as the backend gives them (zeros), so
 * that a measuring backend (kernels/measure.h) sizes a model without
 * touching memory. */
#ifndef DMS_MODEL_RANDOM_H
#define DMS_MODEL_RANDOM_H

#include <stdint.h>

#include "model/model.h"

/* path: a folder with config.json (or a .gguf file: only its config is
 * used). layers > 0 keeps only the first `layers` layers (a truncated model
 * of the real width). Weights follow Hugging Face initialisation: matrices
 * and embeddings uniform with std 0.02 from the counter RNG keyed by seed,
 * RMSNorm weights 1, biases 0.02-scale; in be->weight_dtype. */
int dms_model_init_random(dms_model *m, const char *path, const dms_backend *be, uint64_t seed, int layers,
                          int fill, dms_err *err);

#endif
