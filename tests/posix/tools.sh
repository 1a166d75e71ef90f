#!/usr/bin/env bash
# Real tools inside a mounted folder: tools.sh MOUNTPOINT SCRATCH
# cp -a + diff -r of /usr/include, an rsync -a round trip, tar create/extract, git, SQLite.
set -euo pipefail
mnt=$1
scratch=$2
cd "$mnt"

echo "-- cp -a /usr/include, diff -r"
cp -a /usr/include "$mnt/include"
diff -r --no-dereference /usr/include "$mnt/include"

echo "-- rsync -a round trip"
rsync -a /usr/share/doc/ "$mnt/doc/"
rsync -a "$mnt/doc/" "$scratch/doc-back/"
diff -r --no-dereference /usr/share/doc "$scratch/doc-back"
rsync -a --checksum --dry-run --itemize-changes /usr/share/doc/ "$mnt/doc/" | (! grep -q .)

echo "-- tar create and extract"
tar -C /usr/include -cf "$mnt/include.tar" .
mkdir "$mnt/untar"
tar -C "$mnt/untar" -xf "$mnt/include.tar"
diff -r --no-dereference /usr/include "$mnt/untar"

echo "-- git"
mkdir "$mnt/repo"
cd "$mnt/repo"
git init -q
git config user.email ci@dfs.invalid
git config user.name "dfs ci"
cp -r /usr/include/linux .
git add -A
git commit -qm "linux headers"
echo "change" >> linux/fs.h
git commit -qam "edit"
test "$(git log --oneline | wc -l)" -eq 2
test -z "$(git status --porcelain)"
git fsck --strict --no-progress 2>&1 | (! grep -v "^Checking")
cd "$mnt"

echo "-- SQLite: 10,000 inserts, integrity_check"
sqlite3 "$mnt/test.db" <<'SQL'
CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
INSERT INTO t (v) SELECT hex(randomblob(32)) FROM n;
COMMIT;
SQL
for i in $(seq 50); do echo "INSERT INTO t (v) VALUES ('single $i');"; done | sqlite3 "$mnt/test.db"
test "$(sqlite3 "$mnt/test.db" 'SELECT count(*) FROM t')" -eq 10050
test "$(sqlite3 "$mnt/test.db" 'PRAGMA integrity_check')" = ok
echo "tools: ok"
