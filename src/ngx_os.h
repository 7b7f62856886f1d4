/*
 * OS helpers: fcntl(2) and prctl(2) are variadic, and cffi calls a variadic
 * function through libffi, several times slower; these fixed-signature
 * helpers keep the calls fast.
 */

#ifndef NGX_OS_H_INCLUDED
#define NGX_OS_H_INCLUDED

/* cffi cdef: begin */
int ngxffi_pdeathsig(int signum);
int ngxffi_nonblocking(int fd);
int ngxffi_blocking(int fd);
int ngxffi_get_status_flags(int fd);
int ngxffi_set_status_flags(int fd, int flags);
int ngxffi_get_fd_flags(int fd);
int ngxffi_set_cloexec(int fd, int on);
/* cffi cdef: end */

#endif /* NGX_OS_H_INCLUDED */
