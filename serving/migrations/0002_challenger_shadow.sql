-- The challenger in shadow (serving.shadow): the version scored beside the champion, its
-- score and the decision it would have made; never acted on (as the SQLite log's columns).
ALTER TABLE decisions ADD COLUMN challenger_version TEXT;
ALTER TABLE decisions ADD COLUMN challenger_score DOUBLE PRECISION;
ALTER TABLE decisions ADD COLUMN challenger_decision TEXT;
