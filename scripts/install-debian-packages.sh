#!/usr/bin/env bash
# Install the Debian packages Sandhive needs on a host, only those that are missing.
# Runs as root (sandboxes need root for namespaces, cgroups and mounts).
set -euo pipefail

PACKAGES=(
  python3 python3-venv python3-pip   # the control plane and envd's development runtime
  util-linux                          # unshare, mount
  iproute2                            # ip netns
  mmdebstrap                          # system image and base templates from Debian's repository
  busybox-static                      # the busybox-only rootfs used to test envd without Python
  ca-certificates curl
  runc                                # the OCI runtime of the container backend
  nftables conntrack                  # the node's firewall and NAT; cutting a sandbox's open connections
  postgresql                          # the store's PostgreSQL tests start a private cluster from it
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing Debian packages: ${missing[*]}. Run 'sudo make up' (or install them) first." >&2
  exit 1
fi
echo "Installing Debian packages: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
