#!/usr/bin/env bash
# Debian packages the tests and benchmarks use: real codecs/CLI baselines (ffmpeg), real speech
# (espeak-ng, sox), a real Redis online store, Prometheus (the observability tests start one;
# promtool checks and unit-tests the alert rules), OpenCV's sample data is fetched by the tests.
# Installs only what is missing; needs root (CI and dev machines here are root).
set -euo pipefail
need=()
command -v ffmpeg >/dev/null || need+=(ffmpeg)
command -v espeak-ng >/dev/null || need+=(espeak-ng)
command -v sox >/dev/null || need+=(sox)
command -v redis-server >/dev/null || need+=(redis-server)
command -v java >/dev/null || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need+=(maven)
command -v promtool >/dev/null || need+=(prometheus)   # prometheus + promtool: alert rules, tests
if ((${#need[@]})); then
  echo "installing Debian packages: ${need[*]}"
  if [ "$(id -u)" != 0 ]; then echo "need root to apt-get install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
