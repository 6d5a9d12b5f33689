-- name: record_parameters
-- What the attempt ran with (secrets redacted); fenced like every write of a running attempt.
UPDATE attempts SET parameters = $3 WHERE id = $1 AND lease_token = $2;
