-- Bucket polling (storage listener, source `poll`): the ETag last seen per listed object.
-- Claiming a (key, etag) pair here and admitting its event share one transaction, so neither a
-- restart nor a second listener replica admits an unchanged object again.
CREATE TABLE storage_poll_objects (
    bucket   text NOT NULL,
    key      text NOT NULL,
    etag     text NOT NULL,
    seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bucket, key)
);
