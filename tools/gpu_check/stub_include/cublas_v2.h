/* Stand-in for cuBLAS's header, used by tools/gpu_check/run.sh only when the
 * GPU machine has no cuBLAS headers. torch's ATen/cuda headers name these
 * types in declarations that mmcv's ops never call; the typedefs match
 * cuBLAS's own, so nothing compiled against them differs. */
#pragma once
#include <cuda_runtime_api.h>
typedef struct cublasContext *cublasHandle_t;
typedef enum { CUBLAS_STATUS_SUCCESS = 0 } cublasStatus_t;
