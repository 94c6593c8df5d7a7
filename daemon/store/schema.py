"""The state database's schema: numbered migrations, tracked by ``PRAGMA user_version``.

Each entry is applied once, in order, inside one transaction; a database newer than this list
is refused (see ``Store._migrate``). Never edit an entry that has shipped: add a new one.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
    # 1: the first schema
    """
    CREATE TABLE files (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,             -- the name it was dropped under
        inbox_path TEXT NOT NULL,
        work_path TEXT NOT NULL,        -- where it is kept while its requests run
        size INTEGER NOT NULL,
        status TEXT NOT NULL,           -- claimed, ingesting, active, writing, done
        lines INTEGER NOT NULL DEFAULT 0,
        invalid INTEGER NOT NULL DEFAULT 0,
        error TEXT,                     -- why the file could not be read at all
        results_path TEXT,
        summary_path TEXT,
        archived_path TEXT,
        created_at REAL NOT NULL,
        ingested_at REAL,
        finished_at REAL
    );
    CREATE TABLE batches (
        id INTEGER PRIMARY KEY,
        tag TEXT NOT NULL UNIQUE,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        account TEXT NOT NULL,          -- provider, base URL and a digest of the key
        status TEXT NOT NULL,           -- submitting, submitted, collected, aborted
        provider_batch_id TEXT,
        input_file_id TEXT,
        provider_status TEXT,
        n_items INTEGER NOT NULL,
        counts TEXT,
        error TEXT,
        created_at REAL NOT NULL,       -- when the intent row was written
        submitted_at REAL,
        ended_at REAL,
        next_poll_at REAL,
        poll_interval_s REAL,
        reconcile_attempts INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        file_id INTEGER NOT NULL REFERENCES files (id),
        line INTEGER NOT NULL,
        custom_id TEXT NOT NULL,
        model TEXT,
        provider TEXT,
        body TEXT,                      -- provider-native request body (JSON)
        size_bytes INTEGER NOT NULL DEFAULT 0,
        metadata TEXT,                  -- echoed back untouched (JSON)
        adaptations TEXT,               -- JSON list of sentences
        -- status: invalid, pending, batched, succeeded, failed, expired, canceled
        status TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL DEFAULT 0,
        batch_id INTEGER REFERENCES batches (id),
        batch_ids TEXT NOT NULL DEFAULT '[]',
        result TEXT,                    -- JSON: text, finish_reason, usage, response
        error TEXT,                     -- JSON: type, message, code
        updated_at REAL NOT NULL
    );
    CREATE INDEX requests_due ON requests (status, provider, model, next_attempt_at);
    CREATE INDEX requests_file ON requests (file_id, line);
    CREATE INDEX requests_batch ON requests (batch_id);
    CREATE INDEX batches_status ON batches (status, provider);
    """,
    # 2: ingest bookkeeping: passes begun (a pass that a crash cut short stays counted, so a
    # file that keeps killing the process is quarantined), and the bytes of the work copy read
    # so far (what a writer appended after that is found and ingested, or reported; -1: not
    # read to its end by a pass)
    """
    ALTER TABLE files ADD COLUMN ingest_starts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE files ADD COLUMN read_bytes INTEGER NOT NULL DEFAULT -1
    """,
    # 3: adaptive batch sizing and enqueued-token budgets (daemon/sizing.py, daemon/budgets.py).
    # batches.tokens: the estimated prompt tokens of a batch (held against the model's budget
    # while it is open); batches.role: "canary" (the first batch of a model in a file) or
    # "probe" (a batch larger than the model has proven). lanes: one model's requests of one
    # file, and where its canary stands. model_sizes: the largest batch of a model that ended
    # well, per account. budgets: the enqueued-token limit of a model, per account. The due
    # index gains the file, so a claim reads one file's due requests in order.
    """
    ALTER TABLE batches ADD COLUMN tokens INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE batches ADD COLUMN role TEXT;
    CREATE TABLE lanes (
        file_id INTEGER NOT NULL,
        provider TEXT NOT NULL,
        model TEXT NOT NULL,
        state TEXT NOT NULL,            -- canary, passed, failed
        canary_batch INTEGER,           -- its canary's batch row (NULL: a new canary is due)
        wait_until REAL NOT NULL,       -- the rest waits for the canary until then at most
        error TEXT,                     -- a failed canary's error (JSON: type, message, code)
        PRIMARY KEY (file_id, provider, model)
    );
    CREATE TABLE model_sizes (
        account TEXT NOT NULL,
        model TEXT NOT NULL,
        proven INTEGER NOT NULL,        -- the largest batch that ended well
        proven_at REAL NOT NULL,
        PRIMARY KEY (account, model)
    );
    CREATE TABLE budgets (
        account TEXT NOT NULL,
        model TEXT NOT NULL,
        limit_tokens INTEGER NOT NULL,  -- the provider's enqueued-token limit
        source TEXT NOT NULL,           -- where it was read: the provider's message, or learned
        scale REAL NOT NULL DEFAULT 1.0, -- the share of the limit filled (lowered on surprises)
        updated_at REAL NOT NULL,
        PRIMARY KEY (account, model)
    );
    DROP INDEX requests_due;
    CREATE INDEX requests_due ON requests (status, provider, model, file_id, next_attempt_at);
    CREATE INDEX batches_model ON batches (account, model, status)
    """,
    # 4: operations. A job's cancel: asked for (``batchd cancel`` writes the intent), then
    # applied by the daemon (its pending requests canceled, its own batches cancelled at the
    # provider: a batch's cancel intent is written before the call, and when the call was made
    # or given up). Retention: when a finished job's outbox and archived files were deleted.
    # A line stored after its job was canceled (a cancel while the file is still being read)
    # is canceled as it is inserted, so the planner never sees it pending. A trigger cannot
    # take parameters: the words are the "pending"/"canceled" statuses and the error a
    # canceled job's requests end with (store/jobs.py, JOB_CANCELED_ERROR), frozen here.
    """
    ALTER TABLE files ADD COLUMN cancel_requested_at REAL;
    ALTER TABLE files ADD COLUMN cancel_applied_at REAL;
    ALTER TABLE files ADD COLUMN outputs_removed_at REAL;
    ALTER TABLE batches ADD COLUMN cancel_requested_at REAL;
    ALTER TABLE batches ADD COLUMN cancel_sent_at REAL;
    CREATE INDEX files_finished ON files (status, finished_at);
    CREATE TRIGGER requests_of_canceled_job AFTER INSERT ON requests
    WHEN NEW.status = 'pending' AND EXISTS (
        SELECT 1 FROM files f WHERE f.id = NEW.file_id AND f.cancel_requested_at IS NOT NULL)
    BEGIN
        UPDATE requests SET status = 'canceled', error = json_object('type', 'job_canceled',
            'message', 'the job was canceled (batchd cancel) before this request got an answer',
            'code', NULL)
        WHERE id = NEW.id; END
    """,
    # 5: two indexes for what runs at every wake of the loop (docs/performance.md). The
    # due-requests index also holds updated_at, so the planner's grouping of the due requests
    # per model and file (``queries.SELECT_DUE_LANES``) reads the index alone: 4.9 ms instead
    # of 15.6 ms for 10,000 pending requests. requests_file_status answers "has this file a
    # request still open?" (``queries.SELECT_FINISHED_FILES``) by a lookup, where the file's
    # rows were read in line order until an open one (all of them once most were done).
    """
    DROP INDEX requests_due;
    CREATE INDEX requests_due
        ON requests (status, provider, model, file_id, next_attempt_at, updated_at);
    CREATE INDEX requests_file_status ON requests (file_id, status)
    """,
    # 6: the provider's own answer of each request in a table of its own (docs/performance.md,
    # "Results and finish"). Stored in requests.result it tripled the size of a request's row,
    # so recording a result rewrote a large row (and the rows the planner, the claim and the
    # status counts read were three times as many pages); the outbox writer now copies the
    # answer's text into the results line without decoding it. requests.result keeps the text,
    # finish reason and usage. Rows stored before are moved here.
    """
    CREATE TABLE answers (
        request_id INTEGER PRIMARY KEY,  -- requests.id
        answer TEXT NOT NULL             -- the provider's answer for the request (JSON)
    );
    INSERT INTO answers (request_id, answer)
        SELECT id, json_quote(json_extract(result, '$.response')) FROM requests
        WHERE result IS NOT NULL AND json_type(result, '$.response') NOT IN ('null');
    UPDATE requests SET result = json_remove(result, '$.response')
        WHERE result IS NOT NULL AND json_type(result, '$.response') IS NOT NULL
    """,
    # 7: a line stored after its job was canceled is canceled by
    # ``Store.add_request_rows`` (one check of the file per stored chunk, in the same write
    # transaction) instead of by the trigger of migration 4, which cost ~4 µs on every insert.
    """
    DROP TRIGGER requests_of_canceled_job
    """,
    # 8: the status-keyed indexes hold only the statuses their queries ask for. A request's
    # status changes two or three times (pending, batched, final); each change moved its
    # entries in requests_due and requests_file_status, and every insert wrote a NULL into
    # requests_batch: 14 index writes over a request's life, 7 now. requests_open holds the
    # pending and batched requests (the due book reads the pending range; a claim reads one
    # file's due requests of a model in order; "has this file an open request?" and the open
    # counts are lookups): a claim moves an entry within it, a result deletes it.
    # requests_final holds the final ones (invalid at ingest, the others when their result is
    # stored): the per-file and per-model counts of status and metrics. requests_batch holds
    # only requests that went into a batch. SQLite uses a partial index only for a query whose
    # WHERE names the same statuses in its text: queries.py spells them from daemon/states.py
    # (``is_pending``, ``is_open``, ``is_final``); the words are frozen here.
    """
    DROP INDEX requests_due;
    DROP INDEX requests_file_status;
    DROP INDEX requests_batch;
    CREATE INDEX requests_open
        ON requests (status, file_id, provider, model, next_attempt_at, updated_at)
        WHERE status = 'pending' OR status = 'batched';
    CREATE INDEX requests_final ON requests (file_id, status, provider, model)
        WHERE status NOT IN ('pending', 'batched');
    CREATE INDEX requests_batch ON requests (batch_id) WHERE batch_id IS NOT NULL
    """,
    # 9: requests.batch_ids lists the batch rows (batches.id) a request went into, in claim
    # order, appended by the claim's own update of the row; it listed provider batch ids,
    # appended at submit by a second rewrite of every request's row (~3 µs a request and its
    # WAL pages). The readers (the outbox, the summary's batches) read them as provider
    # batch ids, leaving out a batch whose create failed (before, it was never listed). The
    # rows stored before are converted: each provider batch id to the row of that provider
    # with that id (the first, in the list's order; an id whose batch row retention deleted
    # has nothing to point at and is dropped), then a request claimed into a batch not
    # submitted yet lists that batch too. The status word is frozen here (migration 8).
    """
    CREATE TEMP TABLE batch_rows (
        provider TEXT NOT NULL,
        provider_batch_id TEXT NOT NULL,
        id INTEGER NOT NULL,
        PRIMARY KEY (provider, provider_batch_id)
    ) WITHOUT ROWID;
    INSERT INTO batch_rows (provider, provider_batch_id, id)
        SELECT provider, provider_batch_id, MIN(id) FROM batches
        WHERE provider_batch_id IS NOT NULL GROUP BY provider, provider_batch_id;
    UPDATE requests SET batch_ids = (
        SELECT json_group_array(id) FROM (
            SELECT b.id AS id FROM json_each(requests.batch_ids) j
            JOIN batch_rows b ON b.provider = requests.provider
                AND b.provider_batch_id = j.value
            ORDER BY j.key))
        WHERE batch_ids != '[]';
    UPDATE requests SET batch_ids = json_insert(batch_ids, '$[#]', batch_id)
        WHERE status = 'batched' AND batch_id IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM json_each(requests.batch_ids) j WHERE j.value = requests.batch_id);
    DROP TABLE batch_rows
    """,
)
