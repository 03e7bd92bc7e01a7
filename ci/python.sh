#!/bin/sh
# Runs the newest CPython >= 3.12 that actually starts, else `python3`.
# `.cargo/config.toml` points PYO3_PYTHON here, so pyo3-ffi's build script
# and ours query the same interpreter. A PYO3_PYTHON set by the user wins.
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
for name in python3.13 python3.12; do
    if command -v "$name" >/dev/null 2>&1 && ok "$name"; then exec "$name" "$@"; fi
done
root=${PYENV_ROOT:-}
if [ -z "$root" ] && command -v pyenv >/dev/null 2>&1; then root=$(pyenv root 2>/dev/null); fi
[ -z "$root" ] && root="$HOME/.pyenv"
if [ -d "$root/versions" ]; then
    for dir in $(ls -1 "$root/versions" | grep -E '^3\.[0-9]+\.[0-9]+$' | sort -t. -k1,1n -k2,2nr -k3,3nr); do
        exe="$root/versions/$dir/bin/python3"
        if [ -x "$exe" ] && ok "$exe"; then exec "$exe" "$@"; fi
    done
fi
exec python3 "$@"
