/* Preloaded into the node toolchain's criu (never into a sandbox).
 *
 * Linux 6.16 restricted SO_PASSCRED and SO_PASSSEC to AF_UNIX, AF_NETLINK and AF_BLUETOOTH sockets: asking an
 * AF_INET socket for them now fails with EOPNOTSUPP. CRIU 4.1.1 (Debian 13's) reads both options from every
 * socket it dumps and gives up on that error, so it cannot dump any process holding a TCP socket (envd's
 * listening socket) on such a kernel. An option the kernel does not support on that socket is off: this shim
 * answers 0 for exactly those two options and that error, and passes every other call through unchanged.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

int getsockopt(int fd, int level, int name, void *value, socklen_t *length) {
    long ret = syscall(SYS_getsockopt, fd, level, name, value, length);
    if (ret < 0 && errno == EOPNOTSUPP && level == SOL_SOCKET && (name == SO_PASSCRED || name == SO_PASSSEC)
            && value != NULL && length != NULL && *length >= sizeof(int)) {
        memset(value, 0, sizeof(int));
        *length = sizeof(int);
        return 0;
    }
    return (int)ret;
}
