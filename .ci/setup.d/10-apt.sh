# shellcheck shell=bash
# Sourced. Debian packages the integration tests use for real: a private Docker engine
# (docker.io), docker-compose (1.29, what bench/bench_services.py --vs-compose compares
# `rayinfra services start` with), busybox-static (stand-in images), redis-server,
# docker-registry (a loopback registry for real pulls), prometheus (its Go binary goes into a
# stand-in image), and zookeeper with openjdk-17-jdk-headless (Debian's ZooKeeper jars on a
# jlink'd Java runtime make the cp-zookeeper stand-in: ~10 s of apt and ~10 s to build the
# image once; see tests/support/images.py). Skips apt entirely when everything is installed;
# `apt-get update` only when something is missing.
# shellcheck source=.ci/apt-install.sh
source "$(dirname "${BASH_SOURCE[0]}")/../apt-install.sh"
ri_apt_install docker.io docker-compose busybox-static redis-server docker-registry prometheus \
  zookeeper openjdk-17-jdk-headless
