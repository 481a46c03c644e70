-- Whether old copies of key material may still sit in the write-ahead log:
-- set in the same transaction as a commit that deleted or overwrote secrets,
-- cleared once a checkpoint has emptied the log. Kept in the database so that
-- any later open or commit, from any process, finishes an erasure that a
-- reader blocked or a crash interrupted.
CREATE TABLE openmls_keypackage_pool_erasure (
    id INTEGER PRIMARY KEY NOT NULL CHECK (id = 1),
    -- Unix milliseconds of the first commit still waiting; NULL when none is.
    pending_since INTEGER,
    -- Bumped by every such commit, so that clearing never forgets a newer one.
    generation INTEGER NOT NULL
);

INSERT INTO openmls_keypackage_pool_erasure (id, pending_since, generation) VALUES (1, NULL, 0);
