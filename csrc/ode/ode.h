// Fused steps of explicit Runge-Kutta solvers (pure C, no Python): the stage
// combinations and the scipy-style error norm of the adaptive Dormand-Prince
// 5(4) integrator that timenet.flow uses for Reflow pairs.
//
// The state is a batch of B independent problems, each of D floats (row b of
// y is sample b's state, flattened); each sample has its own step size h[b],
// so one batch reproduces B separate solve_ivp runs.
#ifndef TIMENET_ODE_H
#define TIMENET_ODE_H

#include "common.h"

// Most stages one call combines (Dormand-Prince has 7 with FSAL).
#define TN_ODE_MAXK 16

// y_new = y + h[b] * sum_j coeffs[j] * ks[j]   (per row b)
// y_new, y are (B, D); ks[j] are (B, D), j < K; coeffs (K,); h (B,).
// Sums in double, stored as float. y_new may alias y (in-place update).
int ode_combine(float *y_new, const float *y, const float *const *ks, const double *coeffs,
                int K, const double *h, int B, ptrdiff_t D);

// The scipy RK45 error norm per row b:
//   err_i   = h[b] * sum_j coeffs[j] * ks[j][b, i]     (the embedded estimate)
//   scale_i = atol + rtol * max(|y[b, i]|, |y_new[b, i]|)
//   norm[b] = sqrt(mean_i (err_i / scale_i)^2)
// norm (B,) double; y, y_new, ks[j] (B, D); coeffs (K,); h (B,).
int ode_error_norm(double *norm, const float *const *ks, const double *coeffs, int K,
                   const double *h, const float *y, const float *y_new, double rtol,
                   double atol, int B, ptrdiff_t D);

#endif
