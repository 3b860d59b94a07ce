#!/bin/sh
# Start the services the test suite talks to, and print their settings as shell
# assignments (run-tests evaluates them). Today: a real PostgreSQL (Debian's package),
# with a role and database for the tests, on 127.0.0.1:5432.
# Without root and without a running server the PostgreSQL tests skip with a reason.
set -eu
log() { printf 'test-services: %s\n' "$*" >&2; }

PG_USER=hubforge_test
PG_DB=hubforge_test
PG_PASSWORD=hubforge-test-pw-5b1e

# Only the assignments reach stdout (run-tests reads it to its end): the set-up runs with
# stdout sent to stderr, so tools' chatter (pg_ctlcluster's "Removed stale pid file.")
# stays out, and the PostgreSQL daemon it starts cannot hold run-tests' pipe open.
PG_URL=
start_postgres() {
    if ! command -v pg_lsclusters >/dev/null; then
        log "installing Debian's postgresql"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    cluster=$(pg_lsclusters -h | awk 'NR==1 {print $1" "$2}')
    if [ -z "$cluster" ]; then
        version=$(ls /usr/lib/postgresql | sort -n | tail -1)
        pg_createcluster "$version" main >/dev/null
        cluster="$version main"
    fi
    # shellcheck disable=SC2086
    if ! pg_lsclusters -h | awk 'NR==1 {print $4}' | grep -q online; then
        log "starting PostgreSQL $cluster"
        pg_ctlcluster $cluster start
    fi
    runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 <<SQL >/dev/null
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER') THEN
    CREATE ROLE $PG_USER LOGIN PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
    if ! runuser -u postgres -- psql -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
        runuser -u postgres -- createdb -O "$PG_USER" "$PG_DB"
    fi
    PG_URL="postgresql://$PG_USER:$PG_PASSWORD@127.0.0.1:5432/$PG_DB"
}

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    start_postgres >&2
    echo "HUBFORGE_TEST_PG_URL=$PG_URL"
else
    log "not root: PostgreSQL is not started; set HUBFORGE_TEST_PG_URL to use your own"
fi
