"""Every SQL statement of batchd, named, in one place (the procrastinate habit).

Statuses are passed as parameters (the ``StrEnum`` members of ``daemon/states.py``), never
spelled inside the SQL text; a set of statuses comes as one JSON list parameter, read with
``json_each``. Only :mod:`daemon.store.db` executes these.
"""

from __future__ import annotations

# -- ingest bookkeeping (files) -----------------------------------------------------------------
COUNT_INGEST_START = (
    "UPDATE files SET ingest_starts = ingest_starts + 1 WHERE id = ? RETURNING ingest_starts"
)
UNCOUNT_INGEST_START = (  # a pass that ended cleanly (done, or stopped by a shutdown)
    "UPDATE files SET ingest_starts = MAX(ingest_starts - 1, 0) WHERE id = ?"
)
SET_READ_BYTES = "UPDATE files SET read_bytes = ? WHERE id = ?"
SELECT_LAST_STORED_LINE = "SELECT COALESCE(MAX(line), 0) FROM requests WHERE file_id = ?"
SELECT_WORK_PATHS_NAMED = (  # work paths ending in one of the given names (one JSON list)
    "SELECT f.work_path FROM files f, json_each(?) j"
    " WHERE substr(f.work_path, -length(j.value)) = j.value"
)


# -- connection ---------------------------------------------------------------------------
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
# The database holds every prompt and answer: created owner-only whatever the umask (SQLite
# gives its -wal and -shm files the database file's mode).
DB_FILE_MODE = 0o600
# A reader's connection (batchd status): read-only at the SQLite level, so it never migrates,
# never switches the journal mode and never writes; it waits this long for a busy database.
READ_ONLY_URI = "file:{path}?mode=ro"
# When the reader may not create the -shm file SQLite needs for a WAL database (a read-only
# folder, no daemon running, so no -wal and no -shm), the file is read as it stands: nothing
# else is writing it then, and the -wal it would miss does not exist.
IMMUTABLE_URI = "file:{path}?mode=ro&immutable=1"
READ_ONLY_TIMEOUT_S = 10.0
# The start-up integrity check: "ok", or one line per problem found.
QUICK_CHECK = "PRAGMA quick_check"
GET_SCHEMA_VERSION = "PRAGMA user_version"
SET_SCHEMA_VERSION = "PRAGMA user_version={version}"  # a PRAGMA takes no parameters
BEGIN = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

# -- files ----------------------------------------------------------------------------------
INSERT_FILE = (
    "INSERT INTO files (name, inbox_path, work_path, size, status, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?)"
)
# The columns set_file_status may change besides the status; "{fields}" becomes ", col = ?" for
# each one given (names from FILE_FIELDS only, values as parameters).
FILE_FIELDS = frozenset(
    {
        "error",
        "lines",
        "invalid",
        "results_path",
        "summary_path",
        "archived_path",
        "ingested_at",
        "finished_at",
        "work_path",
    }
)
UPDATE_FILE = "UPDATE files SET status = ?{fields} WHERE id = ?"
SELECT_FILES_IN = (  # the statuses come as one JSON list
    "SELECT * FROM files WHERE status IN (SELECT value FROM json_each(?)) ORDER BY id"
)
SELECT_FILE = "SELECT * FROM files WHERE id = ?"
DELETE_FILE_REQUESTS = "DELETE FROM requests WHERE file_id = ?"
INSERT_REQUEST = (
    "INSERT INTO requests (file_id, line, custom_id, model, provider, body, size_bytes,"
    " metadata, adaptations, status, error, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
SELECT_FINISHED_FILES = (  # files in the given status none of whose requests is still open
    "SELECT f.* FROM files f WHERE f.status = ? AND NOT EXISTS ("
    " SELECT 1 FROM requests r WHERE r.file_id = f.id"
    " AND r.status IN (SELECT value FROM json_each(?)))"
    " ORDER BY f.id"
)
SELECT_FILE_BATCHES = (
    "SELECT b.provider, b.model, b.provider_batch_id AS id,"
    " COALESCE(b.provider_status, b.status) AS status, b.status AS local_status,"
    " b.counts FROM batches b WHERE b.provider_batch_id IN ("
    " SELECT DISTINCT j.value FROM requests r, json_each(r.batch_ids) j"
    " WHERE r.file_id = ?) ORDER BY b.id"
)
SELECT_FILE_REQUESTS_PAGE = (
    "SELECT * FROM requests WHERE file_id = ? AND line > ? ORDER BY line LIMIT ?"
)

# -- planning and submission ----------------------------------------------------------------
# "oldest": when the longest-waiting due request became due: its retry time (a request sent
# back with a backoff) or, for one due at once, when it was stored or released. The linger is
# measured from then, so retries that come due together go out together.
SELECT_DUE_MODELS = (
    "SELECT provider, model, COUNT(*) AS n, MIN(MAX(next_attempt_at, updated_at)) AS oldest"
    " FROM requests WHERE status = ? AND next_attempt_at <= ? GROUP BY provider, model"
)
SELECT_NEXT_DUE_AT = "SELECT MIN(next_attempt_at) FROM requests WHERE status = ?"
SELECT_CLAIMABLE = (
    "SELECT id, body, size_bytes FROM requests WHERE status = ?"
    " AND provider = ? AND model = ? AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at, id LIMIT ?"
)
INSERT_BATCH = (
    "INSERT INTO batches (tag, provider, model, account, status, n_items, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
BATCH_REQUEST = "UPDATE requests SET status = ?, batch_id = ?, updated_at = ? WHERE id = ?"
MARK_BATCH_SUBMITTED = (
    "UPDATE batches SET status = ?, provider_batch_id = ?, input_file_id = ?,"
    " submitted_at = ?, next_poll_at = ?, poll_interval_s = ? WHERE id = ?"
)
NOTE_PROVIDER_BATCH_ID = (  # each request lists every provider batch it was part of
    "UPDATE requests SET batch_ids = json_insert(batch_ids, '$[#]', ?)"
    " WHERE batch_id = ? AND status = ?"
)
END_BATCH = "UPDATE batches SET status = ?, error = ?, ended_at = ? WHERE id = ?"
NOTE_CREATE_ERROR = "UPDATE batches SET error = ? WHERE id = ? AND status = ?"
FAIL_EXHAUSTED_REQUESTS = (  # requests of an aborted batch that are out of attempts
    "UPDATE requests SET status = ?, error = ?, attempts = attempts + ?,"
    " batch_id = NULL, updated_at = ? WHERE batch_id = ? AND status = ?"
    " AND attempts + ? >= ?"
)
REQUEUE_BATCH_REQUESTS = (
    "UPDATE requests SET status = ?, attempts = attempts + ?,"
    " next_attempt_at = ?, batch_id = NULL, updated_at = ?"
    " WHERE batch_id = ? AND status = ?"
)
FAIL_BATCH_REQUESTS = (
    "UPDATE requests SET status = ?, error = ?, attempts = attempts + 1,"
    " batch_id = NULL, updated_at = ? WHERE batch_id = ? AND status = ?"
)
SELECT_BATCHES_IN = (  # the statuses come as one JSON list
    "SELECT * FROM batches WHERE status IN (SELECT value FROM json_each(?)) ORDER BY id"
)
SELECT_BATCH = "SELECT * FROM batches WHERE id = ?"
SELECT_ACCOUNT_BATCHES = (  # one provider account's batches in one status, oldest first
    "SELECT * FROM batches WHERE status = ? AND provider = ? AND account = ? ORDER BY id"
)
SELECT_OTHER_ACCOUNT_BATCHES = (  # open batches of this provider under another account
    "SELECT * FROM batches WHERE provider = ? AND account != ?"
    " AND status IN (SELECT value FROM json_each(?)) ORDER BY id"
)
ADOPT_BATCH = "UPDATE batches SET account = ? WHERE id = ?"
SELECT_KNOWN_PROVIDER_IDS = (
    "SELECT provider_batch_id FROM batches WHERE provider = ? AND provider_batch_id IS NOT NULL"
)
COUNT_RECONCILE_ATTEMPT = (
    "UPDATE batches SET reconcile_attempts = reconcile_attempts + 1 WHERE id = ?"
)
SELECT_RECONCILE_ATTEMPTS = "SELECT reconcile_attempts FROM batches WHERE id = ?"
COUNT_CREATES_SINCE = (
    "SELECT COUNT(*) FROM batches WHERE provider = ? AND created_at >= ? AND status != ?"
)

# -- polling and results ----------------------------------------------------------------------
SELECT_DUE_POLLS = (
    "SELECT * FROM batches WHERE status = ? AND provider = ? AND account = ?"
    " AND next_poll_at <= ? ORDER BY next_poll_at"
)
SELECT_NEXT_POLL_AT = (
    "SELECT MIN(next_poll_at) FROM batches WHERE status = ? AND provider = ? AND account = ?"
)
SELECT_POLL_BOOK = (  # the light schedule of an account's submitted batches, since a time
    "SELECT id, provider_batch_id, submitted_at, created_at, next_poll_at FROM batches"
    " WHERE status = ? AND provider = ? AND account = ? AND submitted_at >= ?"
)
SELECT_LAST_SUBMITTED_AT = (
    "SELECT MAX(submitted_at) FROM batches WHERE status = ? AND provider = ? AND account = ?"
)
SELECT_BATCHES_BY_ID = (  # the ids come as one JSON list
    "SELECT * FROM batches WHERE status = ? AND id IN (SELECT value FROM json_each(?))"
    " ORDER BY id"
)
UPDATE_POLL = (
    "UPDATE batches SET provider_status = ?, counts = ?, next_poll_at = ?,"
    " poll_interval_s = ? WHERE id = ?"
)
RECORD_RESULT = (  # only a request still waiting on this batch is touched (idempotent)
    "UPDATE requests SET status = ?, attempts = attempts + ?, next_attempt_at = ?,"
    " result = COALESCE(?, result), error = ?, updated_at = ?, batch_id = NULL"
    " WHERE id = ? AND batch_id = ? AND status = ?"
)
SELECT_BATCH_REQUESTS = "SELECT id, attempts FROM requests WHERE batch_id = ? AND status = ?"
MARK_BATCH_COLLECTED = (
    "UPDATE batches SET status = ?, provider_status = ?, counts = ?, ended_at = ? WHERE id = ?"
)

# -- status -----------------------------------------------------------------------------------
REPORT_FILES = (
    "SELECT f.id, f.name, f.status, f.lines, f.invalid, f.error, f.created_at,"
    " (SELECT json_group_object(status, n) FROM (SELECT status, COUNT(*) AS n"
    "  FROM requests WHERE file_id = f.id GROUP BY status)) AS counts"
    " FROM files f ORDER BY f.id DESC LIMIT 200"
)
REPORT_BATCHES = (
    "SELECT id, provider, model, provider_batch_id, status, provider_status, n_items,"
    " created_at, ended_at FROM batches ORDER BY id DESC LIMIT 200"
)
REPORT_WAITING = (  # requests not final yet, per provider (the statuses come as one JSON list)
    "SELECT provider, COUNT(*) AS n FROM requests"
    " WHERE status IN (SELECT value FROM json_each(?)) GROUP BY provider"
)
REPORT_ERRORS = (
    "SELECT json_extract(error, '$.type') AS type, COUNT(*) AS n FROM requests"
    " WHERE error IS NOT NULL GROUP BY type ORDER BY n DESC LIMIT 10"
)
