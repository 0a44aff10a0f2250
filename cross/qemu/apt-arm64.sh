# shellcheck shell=bash
# A private apt for Debian bookworm's arm64 packages, shared by fetch-kernel and
# build-test-drivers (sourced; bash). apt runs with its own lists and cache directories
# (~/.cache/onair/apt-arm64), so the arm64 architecture is never added to dpkg. The lists are
# refreshed when older than a day (ONAIR_QEMU_OFFLINE=1: never); downloads are kept in
# ~/.cache/onair/debs-arm64, named by version.
# Needs CACHE, log and die from the caller. Sets APTDIR, DEBS and APT_OPTS; defines candidate,
# fetch_deb and kernel_package.
# Environment: ONAIR_DEBIAN_MIRROR (default http://deb.debian.org/debian), ONAIR_DEBIAN_SECURITY
# (default http://deb.debian.org/debian-security), ONAIR_QEMU_OFFLINE, ONAIR_QEMU_KERNEL.
MIRROR=${ONAIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${ONAIR_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}

APTDIR=$CACHE/apt-arm64
DEBS=$CACHE/debs-arm64
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/sources.list.d" "$DEBS"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
cat >"$APTDIR/sources.list.tmp" <<SRC
deb [arch=arm64 signed-by=$KEYRING] $MIRROR bookworm main
deb [arch=arm64 signed-by=$KEYRING] $MIRROR bookworm-updates main
deb [arch=arm64 signed-by=$KEYRING] $SECURITY bookworm-security main
SRC
if cmp -s "$APTDIR/sources.list.tmp" "$APTDIR/sources.list"; then
  rm "$APTDIR/sources.list.tmp"
else
  mv "$APTDIR/sources.list.tmp" "$APTDIR/sources.list"
  rm -f "$APTDIR/updated"
fi
APT_OPTS=(
  -o APT::Architecture=arm64 -o APT::Architectures=arm64
  -o Dir::State::Lists="$APTDIR/lists" -o Dir::Cache="$APTDIR/cache"
  -o Dir::Etc::SourceList="$APTDIR/sources.list" -o Dir::Etc::SourceParts="$APTDIR/sources.list.d"
  -o Dir::Cache::pkgcache="$APTDIR/cache/pkgcache.bin"
  -o Dir::Cache::srcpkgcache="$APTDIR/cache/srcpkgcache.bin"
  -o Dir::State::status=/dev/null -o Debug::NoLocking=1
  # Package indexes only: no translations, no AppStream metadata.
  -o Acquire::Languages=none
  -o Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false
  -o Acquire::IndexTargets::deb::DEP-11-icons-hidpi::DefaultEnabled=false
)
# As root apt downloads as the _apt user, which cannot write into root's home.
[ "$(id -u)" = 0 ] && APT_OPTS+=(-o APT::Sandbox::User=root)

if [ "${ONAIR_QEMU_OFFLINE:-0}" != 1 ] &&
   { [ ! -e "$APTDIR/updated" ] || [ -n "$(find "$APTDIR/updated" -mmin +1440)" ]; }; then
  log "refreshing Debian bookworm arm64 package lists (in $APTDIR)"
  if apt-get "${APT_OPTS[@]}" -qq update >&2; then
    touch "$APTDIR/updated"
  elif [ -e "$APTDIR/updated" ]; then
    log "apt-get update failed; using the package lists from $(date -r "$APTDIR/updated")"
  else
    die "apt-get update failed and there are no cached package lists"
  fi
fi
[ -e "$APTDIR/updated" ] || die "no package lists: run without ONAIR_QEMU_OFFLINE=1 once"

candidate() { apt-cache "${APT_OPTS[@]}" policy "$1" | sed -n 's/^ *Candidate: //p'; }

# Downloads a package (cached by its pool file name, which includes the version); prints the path.
fetch_deb() {
  local pkg=$1 ver file arch
  ver=$(candidate "$pkg")
  if [ -z "$ver" ] || [ "$ver" = "(none)" ]; then die "no arm64 candidate for $pkg"; fi
  # apt-get download names the file <package>_<version, ':' as %3a>_<architecture>.deb
  arch=$(apt-cache "${APT_OPTS[@]}" show "$pkg=$ver" | sed -n 's/^Architecture: //p' | head -1)
  file=${pkg}_${ver//:/%3a}_${arch}.deb
  if [ ! -s "$DEBS/$file" ]; then
    log "downloading $pkg $ver"
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" -qq download "$pkg=$ver" >&2)
  fi
  [ -s "$DEBS/$file" ] || die "download of $pkg=$ver failed"
  echo "$DEBS/$file"
}

# The kernel package the harness boots: $ONAIR_QEMU_KERNEL, else the newest ABI, which is the
# one the metapackage points at (falling back to the highest name).
kernel_package() {
  local pkg=${ONAIR_QEMU_KERNEL:-}
  if [ -z "$pkg" ]; then
    pkg=$(apt-cache "${APT_OPTS[@]}" depends linux-image-arm64 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-6\.1\.0-[0-9]*-arm64\)$/\1/p' | head -1)
    [ -n "$pkg" ] || pkg=$(apt-cache "${APT_OPTS[@]}" pkgnames linux-image-6.1.0- |
      grep -E '^linux-image-6\.1\.0-[0-9]+-arm64$' | sort -V | tail -1)
  fi
  [ -n "$pkg" ] || die "no linux-image-6.1.0-*-arm64 package found"
  echo "$pkg"
}
