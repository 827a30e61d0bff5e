-- The audit log filtered by action (the console's, GET /v1/audit's): an index seek for
-- one action's newest entries, and one seek per distinct action to list the actions
-- (core.AUDIT_ACTIONS) instead of a scan of the whole log.
CREATE INDEX audit_action ON audit (action, id);
