-- What the decision saw for a blocked recipient (callee zones, local times, regions), so a
-- reviewer can tell why a call was outside its window without re-deriving it.
ALTER TABLE blocks ADD COLUMN evidence_json TEXT NOT NULL DEFAULT '{}';
