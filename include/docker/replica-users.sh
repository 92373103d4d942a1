#!/bin/bash
# The replica's users: an admin for seeding only and a read-only user for every extraction.
mariadb -uroot -p"$MARIADB_ROOT_PASSWORD" <<SQL
CREATE USER IF NOT EXISTS 'retail_admin'@'%' IDENTIFIED BY '${REPLICA_ADMIN_PASSWORD:-admin-change-me}';
GRANT ALL PRIVILEGES ON \`classicmodels%\`.* TO 'retail_admin'@'%';
CREATE USER IF NOT EXISTS 'retail_reader'@'%' IDENTIFIED BY '${REPLICA_READER_PASSWORD:-reader-change-me}'
  WITH MAX_STATEMENT_TIME 900;
GRANT SELECT ON classicmodels.* TO 'retail_reader'@'%';
GRANT SLAVE MONITOR ON *.* TO 'retail_reader'@'%';
SQL
