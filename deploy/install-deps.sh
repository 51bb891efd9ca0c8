#!/bin/sh
# Install the Debian 12 packages that riffq needs to build, run and test.
# Idempotent: when every package is already installed it only runs dpkg-query
# and returns, so `make run` / `make test` can call it every time.
set -eu

PKGS="
build-essential pkg-config make
libuv1-dev libssl-dev libpq-dev libjansson-dev libpg-query-dev libsqlite3-dev
python3-dev python3-numpy python3-pandas
check
postgresql postgresql-client pgbouncer
python3-psycopg2 python3-psycopg python3-asyncpg python3-pytest
default-jdk-headless libpostgresql-jdbc-java
openssl ca-certificates procps
"

missing=""
for p in $PKGS; do
    status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
    case "$status" in
        "install ok installed") ;;
        *) missing="$missing $p" ;;
    esac
done

if [ -z "$missing" ]; then
    exit 0
fi

echo "install-deps: installing:$missing"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
echo "install-deps: done"
