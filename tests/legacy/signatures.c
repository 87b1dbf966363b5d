/* SPDX-License-Identifier: BSD-3-Clause */
/*
 * Inria Melissa's client signatures, checked by the compiler (test_legacy.py builds this with
 * -Werror, once per header name): a legacy solver that keeps a pointer to a call, or declares
 * it itself, compiles only if the types are Melissa's to the letter.
 */
#include LEGACY_HEADER

#ifdef MELISSA_NO_MPI
void (*const init_no_mpi)(const char *, int) = melissa_init_no_mpi;
void (*const send_no_mpi)(const char *, const double *) = melissa_send_no_mpi;
#else
void (*const init)(const char *, const int, MPI_Comm) = melissa_init;
void (*const init_f)(const char *, int *, MPI_Fint *) = melissa_init_f;
#endif
void (*const send)(const char *, const double *) = melissa_send;
void (*const finalize)(void) = melissa_finalize;

int main(void) { return 0; }
