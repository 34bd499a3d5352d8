-- Every session's masks in one table, keyed by session id: the columns of the SQLite store
-- (deployments/engine/mask_store/sqlite.py) with the session in front.
CREATE TABLE masks (
    session text NOT NULL,
    frame integer NOT NULL,
    obj integer NOT NULL,
    height integer NOT NULL,
    width integer NOT NULL,
    counts text NOT NULL,
    x integer NOT NULL,
    y integer NOT NULL,
    w integer NOT NULL,
    h integer NOT NULL,
    area integer NOT NULL,
    score double precision NOT NULL,
    source text,
    propagation integer,
    iou_prev double precision,
    PRIMARY KEY (session, frame, obj)
);
CREATE INDEX masks_by_obj ON masks (session, obj, frame);
