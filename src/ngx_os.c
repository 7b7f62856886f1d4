/*
 * Non-variadic helpers around fcntl(2), prctl(2) and openat(2), and openat2(2)
 * (see ngx_os.h).
 */

#include "ngxffi.h"

static int64_t ngxffi_fault_countdown; /* 0: no allocation fails */

/* malloc, unless a test asked this one to fail (ngxffi_fault_alloc): one
   well-predicted branch beside a malloc. */
void *
ngxffi_alloc(size_t size)
{
    if (ngxffi_fault_countdown > 0 && --ngxffi_fault_countdown == 0) {
        errno = ENOMEM;
        return NULL;
    }
    return malloc(size);
}

int
ngxffi_fault_alloc(int64_t n)
{
    if (n < 0) {
        errno = EINVAL;
        return -1;
    }
    ngxffi_fault_countdown = n;
    return 0;
}

int
ngxffi_get_status_flags(int fd)
{
    return fcntl(fd, F_GETFL);
}

/* prctl(2) is variadic too: a worker asks for a signal when its master dies. */
int
ngxffi_pdeathsig(int signum)
{
    return prctl(PR_SET_PDEATHSIG, signum);
}

int
ngxffi_set_status_flags(int fd, int fl)
{
    return fcntl(fd, F_SETFL, fl);
}

int
ngxffi_get_fd_flags(int fd)
{
    return fcntl(fd, F_GETFD);
}

/* ngx_nonblocking / ngx_blocking (src/os/unix/ngx_socket.c), with F_GETFL and
   F_SETFL rather than FIONBIO so that they work on any descriptor, not just
   sockets. */
int
ngxffi_nonblocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1) return -1;
    return (flags & O_NONBLOCK) ? 0 : fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

int
ngxffi_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags == -1) return -1;
    return (flags & O_NONBLOCK) ? fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) : 0;
}

int
ngxffi_set_cloexec(int fd, int on)
{
    int flags = fcntl(fd, F_GETFD);
    if (flags == -1) return -1;
    flags = on ? (flags | FD_CLOEXEC) : (flags & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, flags);
}

int
ngxffi_outq(int fd)
{
    int n = 0;
    if (ioctl(fd, SIOCOUTQ, &n) == -1) return -1;
    return n;
}

/* Whether an open is refused before the kernel sees it: the helpers pass no
   mode, so a file they created would have mode 0. */
static int
ngxffi_open_refused(const char *path, uint64_t flags)
{
    uint64_t tmpfile = (uint64_t) O_TMPFILE;

    if (path == NULL) {
        errno = EFAULT;
        return 1;
    }
    if ((flags & (uint64_t) O_CREAT) || (flags & tmpfile) == tmpfile) {
        errno = EINVAL;
        return 1;
    }
    return 0;
}

int
ngxffi_openat2(int dirfd, const char *path, uint64_t flags, uint64_t resolve)
{
    struct open_how how;

    if (ngxffi_open_refused(path, flags)) return -1;
    if (ngxffi_fault_fails(NGXFFI_SYS_OPENAT)) return -1;
    memset(&how, 0, sizeof(how));
    how.flags = flags;
    how.resolve = resolve;
    return (int) syscall(SYS_openat2, dirfd, path, &how, sizeof(how));
}

int
ngxffi_openat(int dirfd, const char *path, int flags)
{
    if (ngxffi_open_refused(path, (uint64_t) (unsigned) flags)) return -1;
    return ngxffi_sys_openat(dirfd, path, flags);
}
