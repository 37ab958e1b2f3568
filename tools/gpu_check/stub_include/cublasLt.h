/* Stand-in for cuBLASLt's header (see cublas_v2.h here). */
#pragma once
typedef struct cublasLtContext *cublasLtHandle_t;
