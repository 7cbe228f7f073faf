#!/usr/bin/env bash
# Debian packages the project uses: espeak-ng (speech for `pemt data synth`) and chromium +
# chromium-driver (browser tests of the search page). Installs what is missing when root;
# otherwise says what is missing and carries on (the callers fall back or skip with a reason).
set -u
need=()
command -v espeak-ng >/dev/null 2>&1 || need+=(espeak-ng)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "sysdeps: installing ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}") >/tmp/pemt-sysdeps.log 2>&1 \
    || echo "sysdeps: apt-get failed (see /tmp/pemt-sysdeps.log); continuing without ${need[*]}"
else
  echo "sysdeps: missing ${need[*]} (not root); speech falls back to tones, browser tests skip"
fi
exit 0
