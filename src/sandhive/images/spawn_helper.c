/*
 * sandhive-spawn: drop privileges, take a controlling terminal, then exec a command.
 *
 * Why it exists: envd (Python) starts every command. CPython can only spawn with vfork() when the child
 * needs no credential change and no preexec_fn; otherwise it fork()s envd's whole address space, and in
 * gVisor that fork plus the copy-on-write faults that follow cost ~35 ms per command. So envd always
 * vforks this helper (as root) and the helper does the rest. It is linked statically (no ld.so, no
 * libc to map): in gVisor each mapping an exec sets up is expensive, a dynamic binary costs ~10 ms more.
 *
 *   sandhive-spawn [--status-fd=N] [--ctty] [--oom-score-adj=N] [--max-processes=N] [--groups=G,G,...]
 *                  [--gid=N] [--uid=N] -- PROGRAM [ARG]...
 *
 * In order: --ctty makes stdin the controlling terminal (the caller already made us a session leader),
 * --oom-score-adj raises our OOM score (inherited by everything the command starts, so it is set before
 * the command runs, with no window; raising needs no privilege, and a kernel without the file is left
 * alone), --max-processes sets RLIMIT_NPROC (soft and hard: the user cannot raise it again), then
 * setgroups, setresgid, setresuid. PROGRAM is found as CPython's subprocess finds it: run as given
 * when it contains a slash, else tried in each directory of the environment's PATH (default "/bin:/usr/bin",
 * an empty entry meaning the current directory), reporting the first error that is not ENOENT/ENOTDIR,
 * and no `sh` fallback for ENOEXEC. On any failure the helper writes "STAGE ERRNO\n" to the status fd
 * (close-on-exec, so a successful exec closes it with nothing written), says why on stderr and exits 127.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <unistd.h>

extern char **environ;
static int status_fd = -1;

static void fail(const char *stage, const char *what, int err) {
    if (status_fd >= 0) dprintf(status_fd, "%s %d\n", stage, err);
    fprintf(stderr, "sandhive-spawn: %s: %s\n", what, strerror(err));
    _exit(127);
}

static unsigned long number(const char *text, const char *what) {
    char *end;
    errno = 0;
    unsigned long value = strtoul(text, &end, 10);
    if (errno || end == text || *end || value > 0xfffffffeUL) fail("usage", what, EINVAL);
    return value;
}

static void set_groups(const char *list) {
    size_t count = *list ? 1 : 0;
    for (const char *p = list; *p; p++) count += *p == ',';
    gid_t *groups = calloc(count ? count : 1, sizeof *groups);
    if (!groups) fail("setgroups", "setgroups", ENOMEM);
    char *copy = strdup(list), *save = NULL;
    if (!copy) fail("setgroups", "setgroups", ENOMEM);
    size_t n = 0;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        groups[n++] = (gid_t)number(tok, "--groups");
    if (n != count) fail("usage", "--groups", EINVAL);
    if (setgroups(n, groups) != 0) fail("setgroups", "setgroups", errno);
}

static void run(char **argv) {
    const char *file = argv[0];
    if (strchr(file, '/')) {
        execve(file, argv, environ);
        fail("exec", file, errno);
    }
    const char *path = getenv("PATH");
    if (!path) path = "/bin:/usr/bin";  /* os.defpath, as os.get_exec_path() uses */
    size_t flen = strlen(file);
    char *candidate = malloc(strlen(path) + flen + 2);
    if (!candidate) fail("exec", file, ENOMEM);
    int first = 0;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        size_t dlen = (size_t)(end - dir);
        memcpy(candidate, dir, dlen);
        if (dlen && dir[dlen - 1] != '/') candidate[dlen++] = '/';
        memcpy(candidate + dlen, file, flen + 1);
        execve(candidate, argv, environ);
        if (errno != ENOENT && errno != ENOTDIR && !first) first = errno;
        if (!*end) break;
        dir = end;
    }
    fail("exec", file, first ? first : errno);
}

static void raise_oom_score(const char *value) {
    number(value[0] == '-' ? value + 1 : value, "--oom-score-adj");
    int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;  /* no procfs or no such file: nothing to raise */
    ssize_t n = write(fd, value, strlen(value));
    int err = errno;
    close(fd);
    if (n < 0) fail("oom", "/proc/self/oom_score_adj", err);
}

int main(int argc, char **argv) {
    const char *groups = NULL, *gid = NULL, *uid = NULL, *oom = NULL, *nproc = NULL;
    int ctty = 0, i = 1;
    for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
        if (!strncmp(argv[i], "--status-fd=", 12)) {
            status_fd = (int)number(argv[i] + 12, "--status-fd");
            if (fcntl(status_fd, F_SETFD, FD_CLOEXEC) != 0) { int e = errno; status_fd = -1; fail("usage", "--status-fd", e); }
        } else if (!strcmp(argv[i], "--ctty")) ctty = 1;
        else if (!strncmp(argv[i], "--oom-score-adj=", 16)) oom = argv[i] + 16;
        else if (!strncmp(argv[i], "--max-processes=", 16)) nproc = argv[i] + 16;
        else if (!strncmp(argv[i], "--groups=", 9)) groups = argv[i] + 9;
        else if (!strncmp(argv[i], "--gid=", 6)) gid = argv[i] + 6;
        else if (!strncmp(argv[i], "--uid=", 6)) uid = argv[i] + 6;
        else fail("usage", argv[i], EINVAL);
    }
    if (i + 1 >= argc) fail("usage", "no command after --", EINVAL);
    if (ctty && ioctl(0, TIOCSCTTY, 0) != 0) fail("ctty", "TIOCSCTTY on stdin", errno);
    if (oom) raise_oom_score(oom);
    if (nproc) {
        rlim_t limit = (rlim_t)number(nproc, "--max-processes");
        struct rlimit rl = {limit, limit};
        if (setrlimit(RLIMIT_NPROC, &rl) != 0) fail("rlimit", "setrlimit(RLIMIT_NPROC)", errno);
    }
    if (groups) set_groups(groups);
    if (gid) {
        gid_t g = (gid_t)number(gid, "--gid");
        if (setresgid(g, g, g) != 0) fail("setgid", "setresgid", errno);
    }
    if (uid) {
        uid_t u = (uid_t)number(uid, "--uid");
        if (setresuid(u, u, u) != 0) fail("setuid", "setresuid", errno);
    }
    run(argv + i + 1);
    return 127;
}
