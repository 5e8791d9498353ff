# Sourced by .ci/run before pytest: installs PostgreSQL, starts a throwaway server on 127.0.0.1 and exports
# PLANNER_TEST_POSTGRES_URL for tests/test_search_recovery.py (which fails under CI=true without it).
# The server runs as the postgres user from a temporary data directory and stops when the CI shell exits.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql
fi
_pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
_pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
_pg_dir=$(mktemp -d -t planner-pg.XXXXXX)
chown postgres "$_pg_dir"
su postgres -s /bin/sh -c "'$_pg_bin/initdb' -D '$_pg_dir/data' -A trust -U postgres >'$_pg_dir/initdb.log'"
su postgres -s /bin/sh -c "'$_pg_bin/pg_ctl' -D '$_pg_dir/data' -l '$_pg_dir/server.log' -w \
    -o \"-c listen_addresses=127.0.0.1 -p $_pg_port -k '$_pg_dir'\" start"
su postgres -s /bin/sh -c "'$_pg_bin/createdb' -h 127.0.0.1 -p $_pg_port -U postgres planner_test"
trap "su postgres -s /bin/sh -c \"'$_pg_bin/pg_ctl' -D '$_pg_dir/data' -m fast stop\" >/dev/null; rm -rf '$_pg_dir'" EXIT
export PLANNER_TEST_POSTGRES_URL="postgresql+psycopg2://postgres@127.0.0.1:$_pg_port/planner_test"
echo "PostgreSQL on 127.0.0.1:$_pg_port (PLANNER_TEST_POSTGRES_URL=$PLANNER_TEST_POSTGRES_URL)"
