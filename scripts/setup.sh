#!/usr/bin/env bash
# Set up hpc-mirror on a fresh Debian 12 machine with Python 3.11: a virtualenv in .venv
# with the package installed, and the Debian tools the SIF converter runs (tar2sqfs from
# squashfs-tools-ng, zstd). With --test, also the test dependencies: Python packages and
# the Debian packages the integration tests run for real (the upstream registry, skopeo,
# squashfs-tools for SIF fixtures, siftool, umoci, buildah and squashfuse for the
# converter's proofs, GlusterFS for the multi-instance tests, Chromium for the catalog's browser test (driven by
# Playwright with executable_path=/usr/bin/chromium: no browser download), nginx and wrk
# for the benchmarks, mount for the full-disk tests' own tmpfs, podman and containerd as
# pulling clients, OpenLDAP's slapd with its tools for the site-directory tests, HAProxy
# in front of several mirrors (contrib/haproxy.cfg, plain and terminating TLS), and systemd
# for `systemd-analyze` of contrib/hpc-mirror.service, and Prometheus, which scrapes a
# live mirror in the metrics tests;
# prlimit comes with the essential util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

# The SIF converter runs tar2sqfs (squashfs-tools-ng) and zstd in every installation.
debs=(squashfs-tools-ng zstd)
if [[ $want_test == 1 ]]; then
  debs+=(docker-registry skopeo squashfs-tools nginx-light wrk apache2-utils curl chromium
         glusterfs-server glusterfs-client mount podman containerd uidmap slapd ldap-utils umoci
         busybox-static haproxy systemd prometheus siftool buildah squashfuse)
fi
missing=()
for deb in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$deb" 2>/dev/null | grep -q "install ok installed" || missing+=("$deb")
done
sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
if (( ${#missing[@]} )); then
  $sudo apt-get update -qq
  # docker-registry's and nginx's maintainer scripts start services where they can;
  # the tests start their own instances on free ports, so keep the packaged ones off.
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  (( own_policy )) && $sudo rm -f /usr/sbin/policy-rc.d
fi

if [[ $want_test == 1 ]]; then
  # The multi-instance tests mount a GlusterFS volume twice; GlusterFS refuses
  # localhost/127.0.0.1 as a brick host, so give loopback a name of its own.
  if ! grep -q "hpc-mirror-gluster" /etc/hosts; then
    echo "127.0.0.1 hpc-mirror-gluster" | $sudo tee -a /etc/hosts >/dev/null
  fi
fi

if [[ ! -x .venv/bin/python ]] && ! python3 -m venv .venv 2>/dev/null; then
  # Debian's own python3 ships venv separately.
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
if [[ $want_test == 1 ]]; then
  .venv/bin/python -m pip install -q -e '.[test]'
else
  .venv/bin/python -m pip install -q -e .
fi
touch .venv/.setup-done  # scripts/run-proxy sets up again only when pyproject.toml is newer
