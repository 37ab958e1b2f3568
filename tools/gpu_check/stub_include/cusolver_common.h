/* Stand-in for cuSOLVER's common header (see cublas_v2.h here). */
#pragma once
typedef enum {
  CUSOLVER_STATUS_SUCCESS = 0,
  CUSOLVER_STATUS_INVALID_VALUE = 3
} cusolverStatus_t;
