-- postgresql-tables.sql — the tables Asterisk writes its queue_log and CEL to (extconfig.conf,
-- res_pgsql.conf, cel.conf, cel_pgsql.conf), and cti reads after a restart or a reconnect.
--
--     createuser asterisk; createuser cti_reader; createdb -O asterisk asterisk
--     psql -d asterisk -f asterisk-conf/postgresql-tables.sql
--
-- A database of its own, not cti's: Asterisk's role can then write these two tables and
-- nothing of cti's (customers, users), and cti may keep its own data on SQLite. The layouts
-- are the ones Asterisk documents: queue_log as contrib/ast-db-manage creates it (revision
-- 4105ee839f58), cel with the columns cel_pgsql fills (cel/cel_pgsql.c). Only the text columns
-- are `text` where Asterisk's examples say varchar(80): cel_pgsql inserts each row in one
-- statement, and one value longer than its column (a long channel name, a JSON `extra`) would
-- lose the whole event. Times are UTC (cel_pgsql.conf `usegmtime`, logger.conf
-- `queue_log_realtime_use_gmt`). The indexes are cti's reads: by time (a gap), by call.
-- Run it again at will: it creates only what is missing.

CREATE TABLE IF NOT EXISTS queue_log (
    id BIGSERIAL PRIMARY KEY,
    time TIMESTAMP WITHOUT TIME ZONE,
    callid VARCHAR(80),
    queuename VARCHAR(256),
    agent VARCHAR(80),
    event VARCHAR(32),
    data1 VARCHAR(100),
    data2 VARCHAR(100),
    data3 VARCHAR(100),
    data4 VARCHAR(100),
    data5 VARCHAR(100)
);
CREATE INDEX IF NOT EXISTS queue_log_time ON queue_log (time);
CREATE INDEX IF NOT EXISTS queue_log_callid ON queue_log (callid);

CREATE TABLE IF NOT EXISTS cel (
    id BIGSERIAL PRIMARY KEY,
    eventtype TEXT NOT NULL,
    eventtime TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    userdeftype TEXT,
    cid_name TEXT,
    cid_num TEXT,
    cid_ani TEXT,
    cid_rdnis TEXT,
    cid_dnid TEXT,
    exten TEXT,
    context TEXT,
    channame TEXT,
    appname TEXT,
    appdata TEXT,
    amaflags INTEGER,
    accountcode TEXT,
    peeraccount TEXT,
    uniqueid TEXT,
    linkedid TEXT,
    userfield TEXT,
    peer TEXT,
    extra TEXT
);
CREATE INDEX IF NOT EXISTS cel_eventtime ON cel (eventtime);
CREATE INDEX IF NOT EXISTS cel_linkedid ON cel (linkedid);

-- Who may do what (run as the database's owner, once the roles exist):
--     GRANT INSERT ON queue_log, cel TO asterisk;
--     GRANT USAGE ON SEQUENCE queue_log_id_seq, cel_id_seq TO asterisk;
--     GRANT SELECT ON queue_log, cel TO cti_reader;
-- res_config_pgsql and cel_pgsql also read the catalogue for the columns (allowed to all).
