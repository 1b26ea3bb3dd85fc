#!/usr/bin/env bash
# Install the Debian packages Sandhive needs on a host, only those that are missing.
# Runs as root (sandboxes need root for namespaces, cgroups and mounts).
set -euo pipefail

PACKAGES=(
  python3 python3-venv python3-pip   # the control plane and envd's development runtime
  util-linux                          # unshare, mount
  iproute2                            # ip netns
  mmdebstrap                          # system image and base templates from Debian's repository
  gcc libc6-dev                       # envd's static spawn helper, compiled into the system image
  busybox-static                      # the busybox-only rootfs used to test envd without Python
  strace                              # tests check that envd's spawns are vforks
  ca-certificates curl
  runc                                # the OCI runtime of the container backend
  nftables conntrack                  # the node's firewall and NAT; cutting a sandbox's open connections
  postgresql                          # the store's PostgreSQL tests start a private cluster from it
  qemu-system-x86 qemu-utils          # the microvm backend: QEMU (microvm machine, KVM or TCG) and qcow2 layers
  erofs-utils e2fsprogs lz4           # microvm disks (system image erofs, template ext4) and the guest kernel's LZ4
  buildah                             # template builds from Dockerfiles (daemonless, with a layer cache)
  skopeo umoci                        # OCI images and tarballs for FROM
  docker-registry                     # the local registry the template tests push to and pull from
  nodejs npm                          # the code interpreter's JS SDK smoke test (@e2b/code-interpreter from npm)
  chromium chromium-driver            # the dashboard's browser tests (headless, driven by Playwright; no downloaded browser)
)

# gVisor's runsc (the `gvisor` backend) from bookworm-backports: its 2024 build runs the systrap platform,
# bookworm's own 2022 build only ptrace. The backports suite is added on the host's own mirror and pinned so
# that runsc is the only package taken from it; where backports cannot be had, bookworm's runsc is installed.
install_runsc() {
  local sources=/etc/apt/sources.list.d/debian.sources list=/etc/apt/sources.list.d/sandhive-backports.sources
  local pin=/etc/apt/preferences.d/sandhive-backports mirror="" keyring="" added=0 installed=0
  dpkg-query -W -f='${Status}' runsc 2>/dev/null | grep -q "install ok installed" && installed=1
  if [ "$(id -u)" -ne 0 ]; then
    [ "$installed" = 1 ] || echo "runsc (gVisor) is missing: run 'sudo make debian-packages' for the gvisor backend." >&2
    return 0
  fi
  if [ -r "$sources" ]; then
    read -r mirror keyring < <(awk '
      /^URIs:/ {u=$2} /^Signed-By:/ {k=$2} /^Suites:/ {s=$0}
      /^$/ {if (s ~ /[ \t]bookworm([ \t]|$)/ && !f) {print u, k; f=1}; s=""}
      END {if (s ~ /[ \t]bookworm([ \t]|$)/ && !f) print u, k}' "$sources") || true
  fi
  if [ -n "$mirror" ] && [ ! -e "$list" ]; then
    printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
      "$mirror" "${keyring:-/usr/share/keyrings/debian-archive-keyring.gpg}" > "$list"
    printf '%s\n' 'Package: *' 'Pin: release n=bookworm-backports' 'Pin-Priority: -1' '' \
      'Package: runsc' 'Pin: release n=bookworm-backports' 'Pin-Priority: 990' > "$pin"
    added=1
  fi
  # Installed already: done, unless backports was only just added (then bookworm's build is upgraded).
  if [ "$installed" = 1 ] && [ "$added" = 0 ]; then
    return 0
  fi
  echo "Installing runsc (gVisor)"
  apt-get -o DPkg::Lock::Timeout=300 update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends runsc \
    || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends \
      runsc/bookworm \
    || echo "warning: runsc could not be installed; the gvisor backend is unavailable" >&2
}

missing=()
for pkg in "${PACKAGES[@]}"; do
  # a Node.js from elsewhere (NodeSource's nodejs bundles npm) conflicts with Debian's npm: keep it
  [ "$pkg" = npm ] && command -v npm >/dev/null 2>&1 && continue
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  install_runsc
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Run 'sudo make up' (or install them) first." >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
install_runsc
