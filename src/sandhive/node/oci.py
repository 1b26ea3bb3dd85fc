"""The OCI bundle (`config.json`) of a container sandbox.

Namespaces: user (sandbox uid 0 = the first host uid of the sandbox's own range), pid, mount, ipc, uts,
cgroup, and the network namespace the node made. Docker's default capabilities, the seccomp allowlist, cgroup
limits from the template or the request, the system image read-only at /.sandhive and envd as process 1.

no_new_privs is off, so `sudo` and other setuid programs work inside, as the base template promises. It
protects nothing here: envd already runs as the sandbox's root and starts any command as root for whoever
holds the sandbox's token, and that root is bounded by the user namespace (an unprivileged host uid range
of its own), the capability set, the seccomp filter and the masked paths, none of which setuid can raise.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from . import seccomp, userns

CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
]
# Docker's default set but CAP_NET_RAW: the sandbox's user namespace owns its network namespace (so that it can
# mount its own sysfs), where CAP_NET_RAW would mean raw sockets and forged source addresses. While the host
# owned the namespace the capability granted nothing; leaving it out keeps it that way.
PIDS_LIMIT = 4096  # a fork bomb stops here
CPU_PERIOD_US = 100_000
# Hidden in the sandbox's own sysfs (each an empty read-only tmpfs): firmware tables and RAPL energy counters (a
# side channel), as Docker masks them, and every view of the host's block devices (sysfs shows those whatever
# the namespace; host NICs it shows only to their own network namespace, so those are absent already).
SYSFS_MASKS = ("/sys/firmware", "/sys/devices/virtual/powercap", "/sys/block", "/sys/class/block", "/sys/dev/block",
               "/sys/devices/virtual/block", "/sys/fs/ext4", "/sys/fs/btrfs", "/sys/fs/xfs")


def host_block_device_dirs(sys_root: Path = Path("/sys")) -> list[str]:
    """The `block` directories under /sys/devices that hold the host's disks (e.g. a virtio disk's
    /sys/devices/pci0000:00/.../virtio1/block), as paths inside a sandbox's sysfs, to be masked there."""
    found = set()
    with os.scandir(sys_root / "class/block") as entries:
        for entry in entries:
            real = Path(os.path.realpath(entry.path))
            block = next((p for p in real.parents if p.name == "block"), None)
            if block is not None and block.is_relative_to(sys_root / "devices"):
                found.add("/sys/" + str(block.relative_to(sys_root)))
    return sorted(found)


def bundle_config(*, sandbox_id: str, rootfs: str, netns: str | None, hostname: str, argv: list[str],
                  env: dict[str, str], system_image: str, etc_files: dict[str, str], cpu_count: int,
                  memory_mb: int, host_root: int = userns.BASE) -> dict:
    """`etc_files` maps paths inside the sandbox (e.g. /etc/resolv.conf) to host files bound over them;
    `host_root` is the first host uid/gid of the sandbox's range (`userns.sandbox_range`).

    `netns` None: the OCI runtime makes the network namespace, inside the sandbox's user namespace, which may
    then mount a sysfs of its own (read-only, showing only its own interfaces; host block devices masked); the
    node moves the veth in afterwards. A `netns` path joins a namespace the node made (gVisor's case: the
    sentry's sysfs is its own anyway), which a user namespace cannot mount sysfs for: /sys is then a
    read-only bind of the host's."""
    mapping = [{"containerID": 0, "hostID": host_root, "size": userns.SIZE}]
    memory = memory_mb * 1024 * 1024
    mounts = [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
        if netns is None else
        {"destination": "/sys", "type": "none", "source": "/sys",
         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/.sandhive", "type": "none", "source": system_image,
         "options": ["bind", "ro", "nosuid", "nodev"]},
    ]
    for inside, host in etc_files.items():
        mounts.append({"destination": inside, "type": "none", "source": host, "options": ["bind", "ro"]})
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": argv,
            "env": [f"{k}={v}" for k, v in env.items()],
            "cwd": "/",
            "capabilities": {k: CAPABILITIES for k in ("bounding", "effective", "permitted")},
            "noNewPrivileges": False,  # sudo works; see the module's docstring
        },
        "root": {"path": rootfs, "readonly": False},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "uidMappings": mapping,
            "gidMappings": mapping,
            "namespaces": [{"type": "user"}, {"type": "pid"}, {"type": "ipc"}, {"type": "uts"},
                           {"type": "mount"}, {"type": "cgroup"},
                           {"type": "network"} if netns is None else {"type": "network", "path": netns}],
            "cgroupsPath": f"/sandhive/{sandbox_id}",
            "resources": {
                "devices": [{"allow": False, "access": "rwm"}],
                "memory": {"limit": memory, "swap": memory},
                "cpu": {"quota": cpu_count * CPU_PERIOD_US, "period": CPU_PERIOD_US},
                "pids": {"limit": PIDS_LIMIT},
            },
            "seccomp": seccomp.profile(),
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                            "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
                            *SYSFS_MASKS, *host_block_device_dirs()],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


def for_gvisor(config: dict) -> dict:
    """The same bundle as runsc needs it. gVisor is the sandbox's kernel, so the parts of the bundle that
    steer the host kernel from inside the sandbox change meaning:

    - seccomp: runsc applies a bundle's filter only with `--oci-seccomp`, and then inside its own kernel,
      where its treatment of `errnoRet` (EPERM for the clone3 rule that must answer ENOSYS) breaks libc's
      fallback to clone. The sandbox's syscalls never reach the host: the sentry serves them, itself
      under runsc's own strict host filter. So the bundle carries none.
    - /sys: gVisor's own synthetic sysfs instead of a read-only bind of the host's (which runsc would
      serve from the host through its gofer). It shows no host device, so the host's sysfs masks go.
    - /dev/mqueue: not a filesystem gVisor has; dropped (it would only be ignored with a warning).
    - /tmp: no mount of its own. runsc would mount an unbounded in-memory tmpfs over an empty /tmp, whose
      pages are the sandbox's memory (a /tmp filler ended the whole sandbox); the node keeps /tmp non-empty
      (`SandboxDisk.keep_tmp_on_disk`), so it stays on the root, on the sandbox's disk as in the container
      backend: a /tmp filler gets ENOSPC at the disk size. runsc's root overlay (`--overlay2=root:self`, its
      default) keeps its file store in the root, i.e. on that disk too.

    The user namespace mapping stays: runsc then runs its sentry and gofer as the sandbox range's root, not
    host root.
    """
    config = json.loads(json.dumps(config))  # a deep copy
    config["linux"].pop("seccomp", None)
    config["linux"]["maskedPaths"] = [p for p in config["linux"]["maskedPaths"]
                                      if not p.startswith("/sys/") or p == "/sys/firmware"]
    mounts = [m for m in config["mounts"] if m["destination"] not in ("/sys", "/dev/mqueue", "/tmp")]
    at = next(i for i, m in enumerate(mounts) if m["destination"] == "/sys/fs/cgroup")
    mounts.insert(at, {"destination": "/sys", "type": "sysfs", "source": "sysfs",
                       "options": ["nosuid", "noexec", "nodev", "ro"]})
    config["mounts"] = mounts
    return config
