"""Every SQL statement of batchd, named, in one place (the procrastinate habit).

Statuses are passed as parameters (the ``StrEnum`` members of ``daemon/states.py``); a set of
statuses comes as one JSON list parameter, read with ``json_each``. The exception: a request
status that chooses a partial index (``requests_open``, ``requests_final``: schema migration
8) is spelled in the SQL text, because SQLite uses a partial index only for a query whose
WHERE clause names its statuses literally (a bound parameter never does). Those words come
from the ``StrEnum`` through the conditions below, so each still has one home. Only the
store's modules execute these.
"""

from __future__ import annotations

from ..states import RequestStatus

# -- request statuses in the SQL text (the partial indexes of schema migration 8) -----------
_PENDING = RequestStatus.PENDING.value
_BATCHED = RequestStatus.BATCHED.value
_SUCCEEDED = RequestStatus.SUCCEEDED.value


def is_pending(col: str = "status") -> str:
    """Pending requests: implies requests_open's WHERE, so they are read from that index."""
    return f"{col} = '{_PENDING}'"


def is_batched(col: str = "status") -> str:
    """Requests in a batch (requests_open)."""
    return f"{col} = '{_BATCHED}'"


def is_open(col: str = "status") -> str:
    """Requests not final yet: requests_open's own WHERE, term for term."""
    return f"({col} = '{_PENDING}' OR {col} = '{_BATCHED}')"


def is_final(col: str = "status") -> str:
    """Requests with a final status (or invalid): requests_final's own WHERE."""
    return f"{col} NOT IN ('{_PENDING}', '{_BATCHED}')"


# A file's requests by status, from the two partial indexes (neither reads a row); ``{file}``
# is the file's id (a column of the outer query, or a parameter).
_FILE_STATUS_COUNTS = (
    "SELECT status, COUNT(*) AS n FROM requests WHERE file_id = {file} AND " + is_open()
    + " GROUP BY status UNION ALL SELECT status, COUNT(*) AS n FROM requests"
    " WHERE file_id = {file} AND " + is_final() + " GROUP BY status ORDER BY status"
)

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
SELECT_CANCELED_FILE = "SELECT 1 FROM files WHERE id = ? AND cancel_requested_at IS NOT NULL"
SELECT_FINISHED_FILES = (  # files in the given status none of whose requests is still open
    "SELECT f.* FROM files f WHERE f.status = ? AND NOT EXISTS ("
    " SELECT 1 FROM requests r WHERE r.file_id = f.id AND " + is_open("r.status") + ")"
    " ORDER BY f.id"
)
# The batches a job's requests went through. ``requests.batch_ids`` lists the batch rows
# (``batches.id``) a request went into, in claim order, appended by the claim itself
# (BATCH_REQUESTS_LISTED: no second rewrite of every row at submit). A job's requests grouped
# by that list and their status, in one pass over the job's requests (a subquery per batch
# read them all once per batch: 14 s for 20,000 requests in 400 batches); the few lists are
# read as provider batch ids in Python (SELECT_BATCH_PROVIDER_IDS: a batch whose create
# failed has none and is not listed), then the batches' rows by those ids (one JSON list).
SELECT_FILE_BATCH_COUNTS = (
    "SELECT batch_ids, status, COUNT(*) FROM requests WHERE file_id = ? AND batch_ids != '[]'"
    " GROUP BY batch_ids, status"
)
# The provider batch ids of batch rows (one JSON list of row ids); NULL: never created.
SELECT_BATCH_PROVIDER_IDS = (
    "SELECT id, provider_batch_id FROM batches WHERE id IN (SELECT value FROM json_each(?))"
)
SELECT_BATCHES_NAMED = (
    "SELECT b.provider, b.model, b.provider_batch_id AS id,"
    " COALESCE(b.provider_status, b.status) AS status, b.status AS local_status FROM batches b"
    " WHERE b.provider_batch_id IN (SELECT value FROM json_each(?)) ORDER BY b.id"
)
SELECT_FILE_REQUESTS_PAGE = (  # with each request's answer
    "SELECT r.*, a.answer FROM requests r LEFT JOIN answers a ON a.request_id = r.id"
    " WHERE r.file_id = ? AND r.line > ? ORDER BY r.line LIMIT ?"
)
# What the outbox writer needs of each request (``db.RESULT_COLUMNS``, in this order), the
# body only for the provider given first (Claude: its prompt-cache note).
SELECT_FILE_RESULTS_PAGE = (
    "SELECT r.custom_id, r.line, r.model, r.provider, r.status, r.result, a.answer, r.error,"
    " r.attempts, r.batch_ids, r.adaptations, r.metadata,"
    " CASE WHEN r.provider = ? THEN r.body END"
    " FROM requests r LEFT JOIN answers a ON a.request_id = r.id"
    " WHERE r.file_id = ? AND r.line > ? ORDER BY r.line LIMIT ?"
)

# -- planning and submission ----------------------------------------------------------------
# "oldest": when the longest-waiting due request became due: its retry time (a request sent
# back with a backoff) or, for one due at once, when it was stored or released. The linger is
# measured from then, so retries that come due together go out together.
SELECT_DUE_MODELS = (
    "SELECT provider, model, COUNT(*) AS n, MIN(MAX(next_attempt_at, updated_at)) AS oldest"
    " FROM requests WHERE " + is_pending() + " AND next_attempt_at <= ? GROUP BY provider, model"
)
# The due requests of a model, oldest first (bodies stay on disk), with the due book's
# bucket of each (daemon/store/due.py).
SELECT_CLAIMABLE_SIZES = (
    "SELECT id, size_bytes, file_id, next_attempt_at, updated_at FROM requests"
    " WHERE " + is_pending() + " AND provider = ? AND model = ? AND next_attempt_at <= ?"
    " ORDER BY next_attempt_at, updated_at, id LIMIT ?"
)
# The claimed requests (one JSON list of ids) move into the batch, and list it among the
# batches they went into (``batch_ids``: batch row ids, read as provider batch ids by the
# outbox and summary readers). A request's first batch (the usual case) is written as text:
# json_insert's parse and rewrite of "[]" cost ~0.3 µs a request more (20,000 claimed).
BATCH_REQUESTS_LISTED = (
    "UPDATE requests SET status = ?1, batch_id = ?2, batch_ids = CASE batch_ids"
    " WHEN '[]' THEN '[' || ?2 || ']' ELSE json_insert(batch_ids, '$[#]', ?2) END,"
    " updated_at = ?3 WHERE id IN (SELECT value FROM json_each(?4))"
)
SELECT_BODIES = "SELECT id, body FROM requests WHERE id IN (SELECT value FROM json_each(?))"
INSERT_BATCH = (
    "INSERT INTO batches (tag, provider, model, account, status, n_items, created_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
MARK_BATCH_SUBMITTED = (
    "UPDATE batches SET status = ?, provider_batch_id = ?, input_file_id = ?,"
    " submitted_at = ?, next_poll_at = ?, poll_interval_s = ? WHERE id = ?"
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
# Only a request still waiting on this batch is touched (idempotent). Its batch_id is left
# pointing at the batch that answered it (a request waits on a batch only while its status is
# "batched"): clearing it cost more than the rest of the update (the foreign key's checks and
# the batch index), measured in docs/performance.md.
RECORD_RESULT = (
    "UPDATE requests SET status = ?, attempts = attempts + ?, next_attempt_at = ?,"
    " result = COALESCE(?, result), error = ?, updated_at = ?"
    " WHERE id = ? AND batch_id = ? AND status = ?"
)
# The provider's answer of a request the same chunk's RECORD_RESULT is about to update (the
# same condition, so a collection run again after a crash changes nothing it did before).
RECORD_ANSWER = (
    "INSERT OR REPLACE INTO answers (request_id, answer)"
    " SELECT id, ? FROM requests WHERE id = ? AND batch_id = ? AND status = ?"
)
# The usual result (``outcomes.answered``), stored as RECORD_RESULT stores it, with its constant
# values written in the text: four parameters a row instead of nine (about 1 us less a request).
# A chunk of them is stored with its answers by STORE_ANSWER, no condition read first, as long
# as RECORD_SUCCEEDED then changes every row (``recording.py``; else it is rolled back).
RECORD_SUCCEEDED = (
    f"UPDATE requests SET status = '{_SUCCEEDED}', attempts = attempts + 1,"
    " next_attempt_at = 0.0, result = ?, error = NULL, updated_at = ?"
    " WHERE id = ? AND batch_id = ? AND " + is_batched()
)
# Of the request ids given (a JSON list), those still waiting on the batch: RECORD_ANSWER's
# condition, asked once for a chunk of usual results not all of whose requests still wait, in
# the transaction that stores them; only their answers and rows are then stored.
SELECT_STILL_BATCHED = (
    "SELECT id FROM requests WHERE id IN (SELECT value FROM json_each(?))"
    " AND batch_id = ? AND status = ?"
)
STORE_ANSWER = "INSERT OR REPLACE INTO answers (request_id, answer) VALUES (?, ?)"
SELECT_BATCH_REQUESTS = "SELECT id, attempts FROM requests WHERE batch_id = ? AND status = ?"
# Every request of a batch, read once when its results are collected: those still "batched"
# wait on it; the others have their result stored already (a result leaves batch_id on the
# batch that answered; a request sent again in another batch has that batch's id).
SELECT_BATCH_ROWS = "SELECT id, attempts, status FROM requests WHERE batch_id = ?"
MARK_BATCH_COLLECTED = (
    "UPDATE batches SET status = ?, provider_status = ?, counts = ?, ended_at = ? WHERE id = ?"
)

# -- status -----------------------------------------------------------------------------------
REPORT_FILES = (
    "SELECT f.id, f.name, f.status, f.lines, f.invalid, f.error, f.created_at,"
    " (SELECT json_group_object(status, n) FROM ("
    + _FILE_STATUS_COUNTS.format(file="f.id") + ")) AS counts"
    " FROM files f ORDER BY f.id DESC LIMIT 200"
)
REPORT_BATCHES = (
    "SELECT id, provider, model, provider_batch_id, status, provider_status, n_items,"
    " created_at, ended_at FROM batches ORDER BY id DESC LIMIT 200"
)
# Requests not final yet, per provider: counted in the index's own order (no sort of every
# open request), then summed per provider.
REPORT_WAITING = (
    "SELECT provider, SUM(n) AS n FROM (SELECT provider, COUNT(*) AS n FROM requests WHERE "
    + is_open() + " GROUP BY status, file_id, provider) GROUP BY provider"
)
REPORT_ERRORS = (
    "SELECT json_extract(error, '$.type') AS type, COUNT(*) AS n FROM requests"
    " WHERE error IS NOT NULL GROUP BY type ORDER BY n DESC LIMIT 10"
)

# -- adaptive sizing (daemon/sizing.py) -------------------------------------------------------
# The due book (daemon/store/due.py): the pending requests per model and file (a lane), in
# buckets of equal (next_attempt_at, updated_at). Read from requests_open alone, in its order.
SELECT_PENDING_BUCKETS = (
    "SELECT provider, model, file_id, next_attempt_at, updated_at, COUNT(*) FROM requests"
    " WHERE " + is_pending() + " GROUP BY file_id, provider, model, next_attempt_at, updated_at"
)
DATA_VERSION = "PRAGMA data_version"  # changes when another connection commits a write
SELECT_FILE_CANCELED = "SELECT cancel_requested_at IS NOT NULL FROM files WHERE id = ?"
SELECT_CLAIMABLE_SIZES_IN_FILE = (  # the due requests of a model in one file, in index order
    "SELECT id, size_bytes, file_id, next_attempt_at, updated_at FROM requests"
    " WHERE " + is_pending() + " AND provider = ? AND model = ? AND file_id = ?"
    " AND next_attempt_at <= ? ORDER BY next_attempt_at, updated_at, id LIMIT ?"
)
SELECT_LANES = (  # the model's lanes among the given files (one JSON list)
    "SELECT file_id, state, canary_batch, wait_until, error FROM lanes"
    " WHERE provider = ? AND model = ? AND file_id IN (SELECT value FROM json_each(?))"
)
INSERT_LANE = (  # a file's first batch of a model: its canary
    "INSERT INTO lanes (file_id, provider, model, state, canary_batch, wait_until)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (file_id, provider, model)"
    " DO UPDATE SET canary_batch = excluded.canary_batch"
)
SELECT_BATCH_LANES = "SELECT file_id, provider, model FROM lanes WHERE canary_batch = ?"
END_LANE_CANARY = (  # the canary ended: passed, failed (with its error) or to be sent again
    "UPDATE lanes SET state = ?, error = ?, canary_batch = ? WHERE canary_batch = ?"
)
SUM_LANE_PENDING = (  # the lane's requests a failed canary keeps back (never sent)
    "SELECT COUNT(*), COALESCE(SUM(size_bytes), 0) FROM requests"
    " WHERE file_id = ? AND provider = ? AND model = ? AND " + is_pending() + " AND attempts = 0"
)
FAIL_LANE_REQUESTS = (  # the lane's never-sent pending requests, ended with its canary's error
    "UPDATE requests SET status = ?, error = ?, updated_at = ?"
    " WHERE file_id = ? AND provider = ? AND model = ? AND " + is_pending() + " AND attempts = 0"
)
# The lane's pending requests that were sent already (a retryable error sent them back, in the
# canary or after its wait) end with their own last error: they were sent, so not "not sent".
END_LANE_RETRIES = (
    "UPDATE requests SET status = ?, error = COALESCE(error, ?), updated_at = ?"
    " WHERE file_id = ? AND provider = ? AND model = ? AND " + is_pending() + " AND attempts > 0"
)
RELEASE_LANE_CANARY = (  # the canary never ran (aborted): the lane needs a new one
    "UPDATE lanes SET canary_batch = NULL WHERE canary_batch = ?"
)
FAIL_LANE_CANARY = (  # the canary's create was refused for good: the lane failed
    "UPDATE lanes SET state = ?, error = ?, canary_batch = NULL WHERE canary_batch = ?"
)
SELECT_FILE_LANES = (
    "SELECT l.provider, l.model, l.state, l.error, (SELECT COUNT(*) FROM requests r"
    " WHERE r.file_id = l.file_id AND r.model = l.model AND r.provider = l.provider"
    " AND r.error IS NOT NULL AND json_extract(r.error, '$.type') = ?) AS not_sent,"
    " (SELECT COALESCE(SUM(r.size_bytes), 0) FROM requests r"
    " WHERE r.file_id = l.file_id AND r.model = l.model AND r.provider = l.provider"
    " AND r.error IS NOT NULL AND json_extract(r.error, '$.type') = ?) AS not_sent_bytes"
    " FROM lanes l WHERE l.file_id = ? AND l.state = ?"
)
SELECT_MODEL_SIZE = "SELECT proven, proven_at FROM model_sizes WHERE account = ? AND model = ?"
UPSERT_MODEL_SIZE = (  # a batch of n items ended well: the model has proven n (or more)
    "INSERT INTO model_sizes (account, model, proven, proven_at) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (account, model) DO UPDATE SET proven_at = excluded.proven_at,"
    " proven = CASE WHEN model_sizes.proven_at < ? THEN excluded.proven"
    " ELSE MAX(model_sizes.proven, excluded.proven) END"
)
SELECT_OPEN_PROBE = (  # when the model's open probe (if any) was created
    "SELECT MAX(created_at) FROM batches WHERE account = ? AND model = ? AND role = ?"
    " AND status IN (SELECT value FROM json_each(?))"
)
# The most common error of a batch's failed requests (a canary's): a result leaves batch_id
# on the batch that answered, so they are found through requests_batch.
SELECT_BATCH_FAILURE = (
    "SELECT r.error, COUNT(*) AS n FROM requests r WHERE r.batch_id IN (SELECT b.id"
    " FROM batches b WHERE b.provider_batch_id = ? AND b.provider = ? AND b.model = ?)"
    " AND r.status = ? AND r.error IS NOT NULL"
    " GROUP BY json_extract(r.error, '$.type') ORDER BY n DESC LIMIT 1"
)
NOTE_BATCH_SIZING = "UPDATE batches SET tokens = ?, role = ? WHERE id = ?"

# -- enqueued-token budgets (daemon/budgets.py) -----------------------------------------------
SELECT_IN_FLIGHT = (  # the model's open batches: estimated tokens and how many
    "SELECT COALESCE(SUM(tokens), 0), COUNT(*) FROM batches WHERE account = ? AND model = ?"
    " AND status IN (SELECT value FROM json_each(?))"
)
SELECT_OPEN_AT = (  # the tokens of the model's other batches open when a batch was created
    "SELECT COALESCE(SUM(tokens), 0) FROM batches WHERE account = ? AND model = ? AND id != ?"
    " AND created_at <= ? AND (ended_at IS NULL OR ended_at >= ?)"
)
SELECT_BUDGET = (
    "SELECT limit_tokens, source, scale, updated_at FROM budgets WHERE account = ? AND model = ?"
)
UPSERT_BUDGET = (
    "INSERT INTO budgets (account, model, limit_tokens, source, scale, updated_at)"
    " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, model) DO UPDATE SET"
    " limit_tokens = excluded.limit_tokens, source = excluded.source, scale = excluded.scale,"
    " updated_at = excluded.updated_at"
)
REPORT_BUDGETS = (  # every budget with the tokens its model has in flight
    "SELECT g.account, g.model, g.limit_tokens, g.source, g.scale, (SELECT COALESCE(SUM(b.tokens),"
    " 0) FROM batches b WHERE b.account = g.account AND b.model = g.model"
    " AND b.status IN (SELECT value FROM json_each(?))) AS in_flight FROM budgets g"
    " ORDER BY g.model"
)

# -- cancel (``batchd cancel``, daemon/cancel.py) -----------------------------------------------
# A database created by this batchd reclaims the pages that retention frees (``batchd gc``):
# auto_vacuum can only be chosen before the first table exists (or by a VACUUM). It has pages
# of 16 KiB (SQLite's default is 4 KiB): a chunk of stored results writes a quarter of the WAL
# frames (each checksummed, and copied back by a checkpoint) and the B-trees are shallower;
# SQL CPU per request 70-77 -> 54-67 µs over a 20,000-request run, the file 9% smaller.
# The page size too is chosen before the first table exists; a database in WAL mode keeps
# its own (an older one keeps 4 KiB pages, and works as before).
NEW_DB_PAGE_SIZE = 16384
NEW_DB_PRAGMAS = (f"PRAGMA page_size={NEW_DB_PAGE_SIZE}", "PRAGMA auto_vacuum=INCREMENTAL")
# A command writing beside the running daemon: the database exists (never created there), is
# in WAL mode already, and is never migrated by the command.
READ_WRITE_URI = "file:{path}?mode=rw"
BESIDE_PRAGMAS = ("PRAGMA synchronous=NORMAL", "PRAGMA foreign_keys=ON")
SELECT_JOB = (
    "SELECT id, name, status, created_at, finished_at, cancel_requested_at, cancel_applied_at,"
    " results_path, summary_path FROM files WHERE id = ?"
)
SELECT_JOBS_NAMED = (
    "SELECT id, name, status, created_at, finished_at, cancel_requested_at, cancel_applied_at,"
    " results_path, summary_path FROM files WHERE name = ? ORDER BY id"
)
REQUEST_CANCEL = (  # the intent; once only, and never for a job already finished
    "UPDATE files SET cancel_requested_at = ? WHERE id = ? AND cancel_requested_at IS NULL"
    " AND status != ?"
)
MARK_CANCEL_APPLIED = (
    "UPDATE files SET cancel_applied_at = ? WHERE id = ? AND cancel_applied_at IS NULL"
)
SELECT_CANCELING_FILES = (  # canceled jobs not written yet (the statuses: one JSON list)
    "SELECT * FROM files WHERE cancel_requested_at IS NOT NULL"
    " AND status IN (SELECT value FROM json_each(?)) ORDER BY id"
)
SELECT_MAX_LINE = "SELECT COALESCE(MAX(line), 0) FROM requests WHERE file_id = ?"
CANCEL_PENDING_LINES = (  # one window of lines at a time: short transactions
    "UPDATE requests SET status = ?, error = ?, next_attempt_at = 0, updated_at = ?"
    " WHERE file_id = ? AND line > ? AND line <= ? AND status = ?"
)
# Requests of a canceled job that an outcome would send back to pending end ``canceled``
# instead, in the same transaction (so the planner never sees them pending).
_OF_CANCELED_FILE = (
    " AND EXISTS (SELECT 1 FROM files f WHERE f.id = requests.file_id"
    " AND f.cancel_requested_at IS NOT NULL)"
)
CANCEL_REQUEUED = (  # the ids come as one JSON list
    "UPDATE requests SET status = ?, error = ?, next_attempt_at = 0, updated_at = ?"
    " WHERE id IN (SELECT value FROM json_each(?)) AND status = ?" + _OF_CANCELED_FILE
)
CANCEL_BATCH_REQUESTS = (  # before an aborted batch's requests are re-queued
    "UPDATE requests SET status = ?, error = ?, batch_id = NULL, next_attempt_at = 0,"
    " updated_at = ? WHERE batch_id = ? AND status = ?" + _OF_CANCELED_FILE
)
SELECT_BATCH_FILES = "SELECT DISTINCT file_id FROM requests WHERE batch_id = ?"
NOTE_BATCH_CANCEL = (
    "UPDATE batches SET cancel_requested_at = COALESCE(cancel_requested_at, ?) WHERE id = ?"
)
MARK_BATCH_CANCEL_SENT = (
    "UPDATE batches SET cancel_sent_at = ?, error = COALESCE(?, error) WHERE id = ?"
)
POLL_SOON = "UPDATE batches SET next_poll_at = ?, poll_interval_s = ? WHERE id = ?"
COUNT_FILE_REQUESTS = _FILE_STATUS_COUNTS.format(file="?1")

# -- retention (``batchd gc``, daemon/retention.py) ----------------------------------------------
SELECT_OUTPUTS_TO_REMOVE = (  # finished jobs whose outbox and archived files are due to go
    "SELECT id, name, results_path, summary_path, archived_path FROM files"
    " WHERE status = ? AND finished_at < ? AND outputs_removed_at IS NULL ORDER BY id LIMIT ?"
)
MARK_OUTPUTS_REMOVED = "UPDATE files SET outputs_removed_at = ? WHERE id = ?"
SELECT_JOBS_TO_FORGET = (  # finished jobs whose rows are due to go; {kept}: files still kept
    "SELECT id, name FROM files WHERE status = ? AND finished_at < ?{kept} ORDER BY id LIMIT ?"
)
OUTPUTS_GONE = " AND outputs_removed_at IS NOT NULL"
DELETE_ANSWER_LINES = (
    "DELETE FROM answers WHERE request_id IN"
    " (SELECT id FROM requests WHERE file_id = ? AND line > ? AND line <= ?)"
)
DELETE_REQUEST_LINES = "DELETE FROM requests WHERE file_id = ? AND line > ? AND line <= ?"
DELETE_FILE_ROW = "DELETE FROM files WHERE id = ?"
# Ended batches no request points at, ended before the cutoff and before any job still open
# was created (such a job's summary may still list them).
DELETE_OLD_BATCHES = (
    "DELETE FROM batches WHERE status IN (SELECT value FROM json_each(?)) AND ended_at < ?"
    " AND ended_at < COALESCE((SELECT MIN(created_at) FROM files WHERE status != ?), ?)"
    " AND NOT EXISTS (SELECT 1 FROM requests r WHERE r.batch_id = batches.id)"
)
AUTO_VACUUM_MODE = "PRAGMA auto_vacuum"  # 0 none, 1 full, 2 incremental
FREELIST_COUNT = "PRAGMA freelist_count"
PAGE_SIZE = "PRAGMA page_size"
INCREMENTAL_VACUUM = "PRAGMA incremental_vacuum({pages})"  # a PRAGMA takes no parameters
FULL_VACUUM = "VACUUM"
# A full rewrite that gives an older database the page size of new ones: out of WAL mode for
# the rewrite (a WAL database cannot change its page size), back to it after.
JOURNAL_ROLLBACK = "PRAGMA journal_mode=DELETE"
JOURNAL_WAL = "PRAGMA journal_mode=WAL"
BUSY_TIMEOUT = "PRAGMA busy_timeout={ms}"

# -- progress (``batchd status``) ----------------------------------------------------------------
REPORT_OPEN_FILES = (  # jobs not finished, oldest first (the statuses: one JSON list)
    "SELECT f.id, f.name, f.status, f.lines, f.invalid, f.error, f.created_at, f.ingested_at,"
    " f.finished_at, f.cancel_requested_at,"
    " (SELECT json_group_object(status, n) FROM ("
    + _FILE_STATUS_COUNTS.format(file="f.id") + ")) AS counts"
    " FROM files f WHERE f.status IN (SELECT value FROM json_each(?)) ORDER BY f.id"
)
REPORT_FILE_USAGE = (  # token totals per job and model of the requests answered so far
    "SELECT file_id, provider, model, COUNT(*) AS n,"
    " SUM(json_extract(result, '$.usage.input_tokens')) AS input_tokens,"
    " SUM(json_extract(result, '$.usage.output_tokens')) AS output_tokens,"
    " SUM(json_extract(result, '$.usage.cached_input_tokens')) AS cached_input_tokens,"
    " SUM(json_extract(result, '$.usage.cache_creation_input_tokens'))"
    "  AS cache_creation_input_tokens"
    " FROM requests WHERE file_id IN (SELECT value FROM json_each(?)) AND result IS NOT NULL"
    " GROUP BY file_id, provider, model"
)
REPORT_OPEN_BATCHES = (
    "SELECT id, tag, provider, model, provider_batch_id, status, provider_status, n_items,"
    " counts, created_at, submitted_at, cancel_requested_at FROM batches"
    " WHERE status IN (SELECT value FROM json_each(?)) ORDER BY id"
)
REPORT_IN_FLIGHT = (  # requests in batches at the providers, per model
    "SELECT provider, model, COUNT(DISTINCT batch_id) AS batches, COUNT(*) AS requests,"
    " SUM(size_bytes) AS bytes FROM requests WHERE " + is_batched() + " GROUP BY provider, model"
    " ORDER BY provider, model"
)
REPORT_FILE_ERRORS = (  # the error kinds of the given jobs (one JSON list of ids)
    "SELECT json_extract(error, '$.type') AS type, COUNT(*) AS n FROM requests"
    " WHERE file_id IN (SELECT value FROM json_each(?)) AND error IS NOT NULL"
    " GROUP BY type ORDER BY n DESC LIMIT 10"
)

# -- service status line and metrics (read-only, daemon/store/snapshot.py) ----------------------
# Each is one aggregate over an index or a small table, except METRICS_TOKENS, METRICS_RETRIES
# and METRICS_ERRORS (a pass over the requests table): the metrics collector bounds how often
# those run (daemon/metrics.py).
SERVICE_OPEN_FILES = "SELECT COUNT(*) FROM files WHERE status IN (SELECT value FROM json_each(?))"
SERVICE_OPEN_REQUESTS = (  # pending and batched, from requests_open
    "SELECT status, COUNT(*) FROM requests WHERE " + is_open() + " GROUP BY status"
)
METRICS_FILES = "SELECT status, COUNT(*), COUNT(error) FROM files GROUP BY status"
# Requests by status, provider and model: the open ones from requests_open, the final ones
# from requests_final, each counted in its index's own order (no sort of every request),
# then summed.
METRICS_REQUESTS = (
    "SELECT status, p, m, SUM(n) FROM (SELECT status, COALESCE(provider, '') AS p,"
    " COALESCE(model, '') AS m, COUNT(*) AS n FROM requests WHERE " + is_open()
    + " GROUP BY status, file_id, provider, model UNION ALL"
    " SELECT status, COALESCE(provider, ''), COALESCE(model, ''), COUNT(*) FROM requests"
    " WHERE " + is_final() + " GROUP BY file_id, status, provider, model) GROUP BY status, p, m"
)
METRICS_BATCHES = "SELECT status, provider, COUNT(*) FROM batches GROUP BY status, provider"
METRICS_OLDEST_PENDING = "SELECT MIN(updated_at) FROM requests WHERE " + is_pending()
# Re-sends recorded so far: each outcome counts one attempt, and a final request's last attempt
# was not a retry (the final statuses come as one JSON list).
METRICS_RETRIES = (
    "SELECT COALESCE(SUM(CASE WHEN status IN (SELECT value FROM json_each(?))"
    " THEN MAX(attempts - 1, 0) ELSE attempts END), 0) FROM requests"
)
METRICS_ERRORS = (
    "SELECT status, COALESCE(json_extract(error, '$.type'), ''), COUNT(*) FROM requests"
    " WHERE error IS NOT NULL GROUP BY 1, 2"
)
# The tokens of every answer so far, per model (priced in Python, as the summaries are); the
# cache writes split by time to live where Anthropic's answer says so.
METRICS_TOKENS = (
    "SELECT provider, model, COUNT(*),"
    " SUM(COALESCE(json_extract(result, '$.usage.input_tokens'), 0)),"
    " SUM(COALESCE(json_extract(result, '$.usage.output_tokens'), 0)),"
    " SUM(COALESCE(json_extract(result, '$.usage.cached_input_tokens'), 0)),"
    " SUM(COALESCE(json_extract(result, '$.usage.cache_creation_input_tokens'), 0)),"
    " SUM(CASE WHEN json_extract(result, '$.usage.cache_creation_input_tokens') > 0"
    "  THEN COALESCE((SELECT json_extract(a.answer,"
    "  '$.result.message.usage.cache_creation.ephemeral_5m_input_tokens') FROM answers a"
    "  WHERE a.request_id = requests.id), 0) ELSE 0 END),"
    " SUM(CASE WHEN json_extract(result, '$.usage.cache_creation_input_tokens') > 0"
    "  THEN COALESCE((SELECT json_extract(a.answer,"
    "  '$.result.message.usage.cache_creation.ephemeral_1h_input_tokens') FROM answers a"
    "  WHERE a.request_id = requests.id), 0) ELSE 0 END)"
    " FROM requests WHERE result IS NOT NULL AND provider IS NOT NULL AND model IS NOT NULL"
    " GROUP BY provider, model"
)
# Enqueued tokens of the open batches, per model, and the budgets' limits.
METRICS_ENQUEUED_TOKENS = (
    "SELECT provider, model, SUM(tokens) FROM batches"
    " WHERE status IN (SELECT value FROM json_each(?)) GROUP BY provider, model"
)
METRICS_TOKEN_BUDGETS = "SELECT account, model, limit_tokens FROM budgets"
