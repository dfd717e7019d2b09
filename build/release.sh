#!/usr/bin/env bash
# Builds Accord's release binaries: static (CGO_ENABLED=0), with the paths,
# build id and VCS stamp left out, so that the same source, Go version and
# flags give the same bytes anywhere. Writes dist/accord_<version>_<os>_<arch>
# (.exe on Windows) and dist/SHA256SUMS.
#
#   build/release.sh                      every platform of PLATFORMS
#   build/release.sh linux/amd64 ...      only these
#
# VERSION, COMMIT and DATE default to what git says of the checkout (DATE is
# the commit's time, not the clock's, for reproducibility); set them to build
# from a source archive. DIST is the output directory (default dist).
set -euo pipefail
cd "$(dirname "$0")/.."

PLATFORMS_DEFAULT="linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64 windows/arm64"
if [ "$#" -gt 0 ]; then platforms="$*"; else platforms="${PLATFORMS:-$PLATFORMS_DEFAULT}"; fi
GO="${GO:-go}"
DIST="${DIST:-dist}"
VERSION="${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}"
COMMIT="${COMMIT:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
DATE="${DATE:-$(TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null || true)}"

pkg=github.com/accord-saga/accord/internal/buildinfo
ldflags="-s -w -buildid= -X $pkg.version=$VERSION -X $pkg.commit=$COMMIT -X $pkg.date=$DATE"

mkdir -p "$DIST"
names=()
for p in $platforms; do
	os="${p%/*}"
	arch="${p#*/}"
	name="accord_${VERSION}_${os}_${arch}"
	[ "$os" = windows ] && name="$name.exe"
	echo "release: $name"
	CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" GOFLAGS= \
		"$GO" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$DIST/$name" ./cmd/accord
	names+=("$name")
done
(cd "$DIST" && sha256sum "${names[@]}" > SHA256SUMS && cat SHA256SUMS)
