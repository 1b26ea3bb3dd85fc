"""The default seccomp profile for container sandboxes.

A deny list on top of the user namespace and the dropped capabilities: the calls below either reach
kernel surface a sandbox never needs (modules, kexec, bpf, perf, keyrings, the new mount API, clock
setting) or would let it nest namespaces (`CLONE_NEWUSER` in clone/unshare, as Docker's profile blocks;
clone3 answers ENOSYS so libc falls back to clone, whose flags can be checked).
"""

from __future__ import annotations

CLONE_NEWUSER = 0x10000000
EPERM = 1
ENOSYS = 38

DENIED = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module", "delete_module",
    "finit_module", "fsconfig", "fsmount", "fsopen", "fspick", "get_kernel_syms", "init_module", "ioperm",
    "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie", "mount", "mount_setattr",
    "move_mount", "name_to_handle_at", "nfsservctl", "open_by_handle_at", "open_tree", "perf_event_open",
    "pivot_root", "query_module", "quotactl", "quotactl_fd", "reboot", "request_key", "setns", "settimeofday",
    "stime", "swapoff", "swapon", "syslog", "umount", "umount2", "uselib", "userfaultfd", "ustat", "vhangup",
    "adjtimex",
)


def profile() -> dict:
    """OCI `linux.seccomp` for x86-64 hosts (64-bit, 32-bit and x32 system call tables)."""
    new_user = {"index": 0, "value": CLONE_NEWUSER, "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}
    return {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS},
            {"names": ["unshare", "clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM, "args": [new_user]},
        ],
    }
