#!/bin/sh
# Runs once, when the postgres container initialises an empty data directory (the
# official image runs /docker-entrypoint-initdb.d/* as the superuser it was given).
#
# Freight does not run as that superuser: a superuser could read any file the server
# can, change any role and switch off every check, so a flaw in Freight would hand all
# of that over. It runs as `freight`, a login role that owns its database, and so its
# tables (migrations create them; the reconciler's VACUUM and ANALYZE need ownership),
# and nothing else: no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v pw="$FREIGHT_DB_PASSWORD" <<'SQL'
CREATE ROLE freight LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS
  PASSWORD :'pw';
CREATE DATABASE freight OWNER freight;
REVOKE ALL ON DATABASE freight FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE freight TO freight;
SQL
