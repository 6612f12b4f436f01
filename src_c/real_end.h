/* real_end.h: closes the instantiation opened by real_begin.h. */
#undef real
#undef FN
#undef gemm_fn
#undef EXP
#undef LOG
#undef LOG1P
#undef TANH
#undef SQRT
#undef FABS
#undef REAL_MAX
#undef FASTNN_DOUBLE
