-- Facts about the database itself, such as which erasure key its hashed opt-outs were
-- written with (a different key would silently stop matching them).
CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
