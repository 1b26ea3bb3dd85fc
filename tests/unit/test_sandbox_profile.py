"""The container bundle's security settings as data (no root, no runtime): the seccomp allowlist, the per-sandbox
uid ranges, no_new_privs and the sysfs. The behaviour itself is tested live in tests/hostile and tests/node."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandhive.node import network, oci, seccomp, userns


def _allowed(profile: dict) -> set[str]:
    return {n for rule in profile["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" and not rule.get("args")
            for n in rule["names"]}


def test_seccomp_is_an_allowlist_without_io_uring() -> None:
    profile = seccomp.profile()
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == seccomp.EPERM
    allowed = _allowed(profile)
    assert not allowed & {"io_uring_setup", "io_uring_enter", "io_uring_register"}
    assert not allowed & {"mount", "umount2", "setns", "bpf", "perf_event_open", "keyctl", "init_module",
                          "kexec_load", "userfaultfd", "personality", "clone", "unshare", "clone3", "socket"}
    assert {"vfork", "execve", "inotify_add_watch", "epoll_wait", "setresuid", "chroot"} <= allowed


def test_seccomp_argument_rules() -> None:
    rules = seccomp.profile()["syscalls"]
    personalities = {r["args"][0]["value"] for r in rules if r["names"] == ["personality"]}
    assert personalities == {0, 8, 0x20000, 0x20008, 0xFFFFFFFF}  # never READ_IMPLIES_EXEC (0x400000)
    clone = next(r for r in rules if "clone" in r["names"])
    assert clone["args"][0]["op"] == "SCMP_CMP_MASKED_EQ" and clone["args"][0]["value"] & 0x10000000  # NEWUSER
    assert next(r for r in rules if r["names"] == ["clone3"])["errnoRet"] == seccomp.ENOSYS


def test_sandbox_ranges_are_distinct_and_fit() -> None:
    last = userns.sandbox_range(network.SLOTS - 1)
    assert last + userns.SIZE <= 2**32 - 1
    assert userns.sandbox_range(0) >= userns.BASE + userns.SIZE
    assert userns.sandbox_range(1) - userns.sandbox_range(0) == userns.SIZE
    with pytest.raises(ValueError):
        userns.sandbox_range(-1)


def test_bundle_uses_the_range_drops_nnp_and_mounts_its_own_sysfs() -> None:
    config = oci.bundle_config(sandbox_id="s", rootfs="/r", netns=None, hostname="s", argv=["/x"], env={},
                               system_image="/i", etc_files={}, cpu_count=1, memory_mb=64,
                               host_root=userns.sandbox_range(7))
    assert config["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 1_000_000 + 7 * 65536, "size": 65536}]
    assert config["process"]["noNewPrivileges"] is False
    assert "CAP_NET_RAW" not in config["process"]["capabilities"]["bounding"]
    sys_mount = next(m for m in config["mounts"] if m["destination"] == "/sys")
    assert sys_mount["type"] == "sysfs" and "ro" in sys_mount["options"]
    assert {"type": "network"} in config["linux"]["namespaces"]
    assert "/sys/block" in config["linux"]["maskedPaths"]
    gvisor = oci.for_gvisor(config)
    assert "seccomp" not in gvisor["linux"] and "/sys/block" not in gvisor["linux"]["maskedPaths"]


def test_host_block_device_dirs(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    disk = sysfs / "devices/pci0000:00/0000:00:02.0/virtio1/block/vda"
    loop = sysfs / "devices/virtual/block/loop0"
    for d in (disk, disk / "vda1", loop, sysfs / "class/block"):
        d.mkdir(parents=True)
    for name, target in (("vda", disk), ("vda1", disk / "vda1"), ("loop0", loop)):
        (sysfs / "class/block" / name).symlink_to(target)
    assert oci.host_block_device_dirs(sysfs) == ["/sys/devices/pci0000:00/0000:00:02.0/virtio1/block",
                                                 "/sys/devices/virtual/block"]
