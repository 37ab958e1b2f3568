/* Stand-in for cuSOLVER's dense header (see cublas_v2.h here). */
#pragma once
#include "cusolver_common.h"
typedef struct cusolverDnContext *cusolverDnHandle_t;
