-- SCIM groups and the attributes a person keeps for SCIM, as in migrations/sqlite/0012.
ALTER TABLE people ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';

CREATE TABLE scim_groups (
    group_id     TEXT COLLATE "C" PRIMARY KEY,
    display_name TEXT NOT NULL,
    display_key  TEXT COLLATE "C" NOT NULL,
    external_id  TEXT,
    created_at   TIMESTAMPTZ NOT NULL,
    updated_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX scim_groups_by_display_key ON scim_groups (display_key);

CREATE TABLE scim_group_members (
    group_id  TEXT COLLATE "C" NOT NULL,
    person_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (group_id, person_id)
);
CREATE INDEX scim_group_members_by_person ON scim_group_members (person_id);
