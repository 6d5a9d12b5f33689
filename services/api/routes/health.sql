-- name: active_instances
-- Sampled into the sluice_instances{state} gauge when /metrics is scraped. Only the unfinished
-- states: they are what an operator watches, and counting them stays cheap as history grows.
SELECT s.state, (SELECT count(*) FROM instances i WHERE i.state = s.state) AS n
FROM unnest(ARRAY['waiting', 'running']) AS s(state);
