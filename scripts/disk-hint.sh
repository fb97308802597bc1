#!/usr/bin/env bash
# Printed when `pip install` fails: the usual cause on a fresh machine is a full disk, since
# torch from PyPI brings its CUDA libraries (the venv is ~7.5 GB) and `make test` adds the
# Kafka/Flink jars, the Prism build (~2 GB of Go caches) and test data (~1 GB under /tmp).
set -uo pipefail
need_gb=12
seen=""
for d in . "${TMPDIR:-/tmp}"; do
  mount=$(df -P "$d" | awk 'NR==2 {print $6}')
  case " $seen " in *" $mount "*) continue ;; esac
  seen="$seen $mount"
  free_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')
  free_gb=$((free_kb / 1024 / 1024))
  if ((free_gb < need_gb)); then
    echo "mmalign: only ${free_gb} GB free at $(cd "$d" && pwd); a fresh set-up needs about" \
         "${need_gb} GB (.venv with torch ~7.5 GB, jars, Go caches, test data): free some space" \
         "and run make again" >&2
  fi
done
