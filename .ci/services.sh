#!/usr/bin/env bash
# Start PostgreSQL, MariaDB and Redis on loopback if they are not answering.
# On this kind of machine they are usually running already; a machine that
# lacks one gets it installed from Debian's packages and started.
set -uo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 1; done
  echo "service on port $1 did not come up" >&2; return 1
}

apt_install() {
  [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! port_open 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  wait_port 5432
  su postgres -c "psql -tc \"select 1 from pg_database where datname='test'\" | grep -q 1 || createdb test" || true
fi

if ! port_open 3306; then
  command -v mariadbd >/dev/null || apt_install mariadb-server
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port 3306
  mariadb -uroot -e "CREATE DATABASE IF NOT EXISTS test" || true
fi

if ! port_open 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_port 6379
fi
# The reference application's page is tested in a real headless browser.
if ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  apt_install chromium chromium-driver || echo "chromium not installed: the browser test will skip" >&2
fi
echo "services: postgresql, mariadb, redis answering on loopback"
