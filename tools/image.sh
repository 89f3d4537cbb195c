#!/usr/bin/env bash
# tools/image.sh — the run stage of docker/Dockerfile without a container
# engine: the same file tree in a folder, checked, and cqrsd run from it.
#
#   tools/image.sh build DIR    make install into DIR as the Dockerfile's build stage does
#                               (PREFIX=/usr/local), the data set beside it, then check
#                               that every shared library the binaries and the module
#                               link comes from a package the run stage installs
#   tools/image.sh run DIR ARGS...
#                               run DIR/usr/local/bin/cqrsd ARGS with the image's ENV
#                               (CQRSD_HTTP_ADDR=0.0.0.0:8080 unless set) and its
#                               default module path, as the image's user would
#
# The run stage's packages are read from docker/Dockerfile itself (the
# apt-get install of its last stage), so the two cannot drift apart unseen.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:?usage: tools/image.sh build|run DIR [ARGS...]}
dir=$(realpath -m "${2:?missing DIR}")
shift 2

# the packages of the Dockerfile's last stage's apt-get install
runtime_packages() {
  awk '/^FROM /{stage++} {print stage "\t" $0}' docker/Dockerfile |
    awk -F'\t' -v last="$(grep -c '^FROM ' docker/Dockerfile)" '$1 == last {print $2}' |
    sed -n '/apt-get install/,/rm -rf/p' | tr ' \\' '\n\n' |
    grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'apt-get|install|rm|DEBIAN_FRONTEND=noninteractive|update|&&|-y|-rf' |
    grep -vE '^(--|/)' | sort -u
}

case "$cmd" in
build)
  rm -rf "$dir"
  make --no-print-directory all >/dev/null
  make --no-print-directory install PREFIX=/usr/local DESTDIR="$dir" >/dev/null
  install -d "$dir/usr/share/cqrsd"
  cp -r data/online-retail "$dir/usr/share/cqrsd/online-retail"
  pkgs=$(runtime_packages)
  # debian:12-slim's own packages (Essential and its base): always there
  base="libc6 libgcc-s1 libstdc++6 zlib1g libselinux1 libpcre2-8-0 libzstd1 liblzma5 libbz2-1.0 libcap2 libcrypt1 libgmp10 libudev1 libsystemd0 liblz4-1 libgcrypt20 libgpg-error0"
  missing=()
  for elf in "$dir"/usr/local/bin/* "$dir"/usr/local/lib/cqrsd/modules/*.so; do
    while read -r soname; do
      path=$(ldd "$elf" | awk -v s="$soname" '$1 == s {print $3}')
      [ -n "$path" ] || { missing+=("$(basename "$elf"): $soname (not found)"); continue; }
      pkg=$(dpkg -S "$(realpath "$path")" 2>/dev/null | head -1 | cut -d: -f1) ||
        pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1) || true
      [ -n "$pkg" ] || { missing+=("$(basename "$elf"): $soname ($path is in no package)"); continue; }
      grep -qxF "$pkg" <<<"$pkgs" || grep -qw "$pkg" <<<"$base" ||
        missing+=("$(basename "$elf"): $soname is in $pkg, which the run stage does not install")
    done < <(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  done
  if [ ${#missing[@]} -gt 0 ]; then
    printf 'tools/image.sh: %s\n' "${missing[@]}" >&2
    exit 1
  fi
  echo "image tree in $dir: $(find "$dir" -type f | wc -l) files; every library linked comes from: $(tr '\n' ' ' <<<"$pkgs")"
  ;;
run)
  [ -x "$dir/usr/local/bin/cqrsd" ] || { echo "tools/image.sh: no $dir/usr/local/bin/cqrsd (tools/image.sh build $dir first)" >&2; exit 1; }
  export CQRSD_HTTP_ADDR=${CQRSD_HTTP_ADDR:-0.0.0.0:8080}
  exec "$dir/usr/local/bin/cqrsd" "$@"
  ;;
*)
  echo "usage: tools/image.sh build|run DIR [ARGS...]" >&2; exit 2
  ;;
esac
