#!/usr/bin/env bash
# Debian packages the tests need: espeak-ng synthesizes the spoken-digit corpus of tests/test_train_e2e.py;
# asterisk-core-sounds-en-wav holds real 8 kHz recordings of digits used as extra held-out speech.
set -euo pipefail
if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends espeak-ng asterisk-core-sounds-en-wav >/dev/null
fi
