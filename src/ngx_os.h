/*
 * OS helpers: fcntl(2) and prctl(2) are variadic, and cffi calls a variadic
 * function through libffi, several times slower; these fixed-signature
 * helpers keep the calls fast.
 */

#ifndef NGX_OS_H_INCLUDED
#define NGX_OS_H_INCLUDED

/* Every allocation of the C goes through ngxffi_alloc (malloc), so that a test
   can make one fail: ngxffi_fault_alloc(n) fails the n-th next one (1: the
   next), 0 turns that off; -1 (EINVAL) for a negative n. */
void *ngxffi_alloc(size_t size);

/* cffi cdef: begin */
int ngxffi_fault_alloc(int64_t n);
int ngxffi_pdeathsig(int signum);
int ngxffi_nonblocking(int fd);
int ngxffi_blocking(int fd);
int ngxffi_get_status_flags(int fd);
int ngxffi_set_status_flags(int fd, int flags);
int ngxffi_get_fd_flags(int fd);
int ngxffi_set_cloexec(int fd, int on);
/* cffi cdef: end */

#endif /* NGX_OS_H_INCLUDED */
