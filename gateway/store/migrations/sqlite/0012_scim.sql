-- SCIM provisioning (RFC 7643/7644). A person keeps, beside the columns the gateway reads,
-- the SCIM attributes it stores for the provisioning client without reading them (name,
-- emails, the userName as spelled) as one JSON object.
ALTER TABLE people ADD COLUMN attributes TEXT NOT NULL DEFAULT '{}';

-- Groups a SCIM client provisions: their display names map to roles ([scim] roles), so a
-- member's role follows their groups. `display_key` is the display name case-folded
-- (SCIM's caseExact=false): unique, and what a `displayName eq` search finds.
CREATE TABLE scim_groups (
    group_id     TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    display_key  TEXT NOT NULL,
    external_id  TEXT,
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX scim_groups_by_display_key ON scim_groups (display_key);

-- Who is in which group; a person's groups are found by the second index.
CREATE TABLE scim_group_members (
    group_id  TEXT NOT NULL,
    person_id TEXT NOT NULL,
    PRIMARY KEY (group_id, person_id)
);
CREATE INDEX scim_group_members_by_person ON scim_group_members (person_id);
