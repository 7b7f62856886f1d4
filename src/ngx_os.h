/*
 * OS helpers: fcntl(2), prctl(2) and openat(2) are variadic, and cffi calls a
 * variadic function through libffi, several times slower; these
 * fixed-signature helpers keep the calls fast. openat2(2) has no glibc
 * wrapper: its helper makes the raw syscall.
 */

#ifndef NGX_OS_H_INCLUDED
#define NGX_OS_H_INCLUDED

/* struct open_how and the RESOLVE_* flags (the constants go to Python). */
#include <linux/openat2.h>
#include <linux/sockios.h> /* SIOCOUTQ */
#include <sys/ioctl.h>
#include <sys/syscall.h>

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

/* The bytes in socket fd's send queue that its peer has not taken yet: unsent,
   or sent and not acknowledged (ioctl SIOCOUTQ). -1 and errno on failure. */
int ngxffi_outq(int fd);

/* openat2(2) with a struct open_how of {flags, 0, resolve}, and openat(2)
   without a mode: both open existing files only (O_CREAT and O_TMPFILE, which
   need a mode, are EINVAL); a NULL path is EFAULT. -1 and errno on failure. */
int ngxffi_openat2(int dirfd, const char *path, uint64_t flags,
                   uint64_t resolve);
int ngxffi_openat(int dirfd, const char *path, int flags);
/* cffi cdef: end */

#endif /* NGX_OS_H_INCLUDED */
