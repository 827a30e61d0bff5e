-- A known location is one document in `location` (JSON of timezone, latitude, longitude,
-- region and postal_code), sealed with encryption on (gateway/store/sealing.py): the
-- columns it replaces showed, beside each number's blind index, where that person lives.
-- Existing rows move into it in clear and the old columns are emptied; the sealing pass
-- (gateway/services/data_rotation.py) seals them, so a pass finished before this migration
-- runs again.
ALTER TABLE known_locations ADD COLUMN location TEXT NOT NULL DEFAULT '';
UPDATE known_locations SET
    location = json_object('timezone', timezone, 'latitude', latitude,
                           'longitude', longitude, 'region', region,
                           'postal_code', postal_code),
    timezone = '', latitude = NULL, longitude = NULL, region = '', postal_code = '';
DELETE FROM settings WHERE name LIKE 'resealed-through:data-key:%'
    AND EXISTS (SELECT 1 FROM known_locations);
