#!/usr/bin/env bash
# Checks that a release build is reproducible: builds linux/amd64 from this
# checkout, then again from a copy of the committed tree at another path,
# with an empty build cache, and compares the bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
platform="${1:-linux/amd64}"
export VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
export COMMIT="${COMMIT:-$(git rev-parse HEAD)}"
export DATE="${DATE:-$(TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd)}"

work="$(mktemp -d)"
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
DIST="$work/a" build/release.sh "$platform" >/dev/null
mkdir "$work/src"
git archive HEAD | tar -x -C "$work/src"
GOCACHE="$work/cache" DIST="$work/b" "$work/src/build/release.sh" "$platform" >/dev/null

name="accord_${VERSION}_${platform%/*}_${platform#*/}"
if ! cmp "$work/a/$name" "$work/b/$name"; then
	echo "release-check: $platform differs between two builds" >&2
	exit 1
fi
echo "release-check: $platform reproducible, sha256 $(sha256sum < "$work/a/$name" | cut -d' ' -f1)"
