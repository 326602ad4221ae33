#!/usr/bin/env bash
# Installs what the provider's workloads and tests need from Debian's packages, when missing:
# a static busybox (the demo image is assembled from it, FROM scratch, no registry), iptables
# (lease isolation from the host), and for the sandbox runtime bubblewrap, iproute2 (network
# namespaces) and util-linux (nsenter, setpriv), and for size-bounded persistent volumes
# util-linux's losetup and e2fsprogs (an ext4 filesystem in a file per volume). Checks that the
# Docker engine answers.
set -euo pipefail
need=()
[ -x /bin/busybox ] && ldd /bin/busybox 2>&1 | grep -q "not a dynamic" || need+=(busybox-static)
command -v iptables >/dev/null || need+=(iptables)
command -v bwrap >/dev/null || need+=(bubblewrap)
command -v ip >/dev/null || need+=(iproute2)
{ command -v nsenter && command -v setpriv && command -v losetup; } >/dev/null || need+=(util-linux)
{ command -v mkfs.ext4 && command -v debugfs; } >/dev/null || need+=(e2fsprogs)
if [ "${#need[@]}" -gt 0 ]; then
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
    echo "setup: the Docker engine does not answer (docker info); the provider needs it" >&2
    exit 1
fi
