/* Stand-in for cuSPARSE's header (see cublas_v2.h here). */
#pragma once
typedef struct cusparseContext *cusparseHandle_t;
typedef enum { CUSPARSE_STATUS_SUCCESS = 0 } cusparseStatus_t;
const char *cusparseGetErrorString(cusparseStatus_t status);
