-- A known location is one document in `location`, sealed with encryption on, as in
-- migrations/sqlite/0019.
ALTER TABLE known_locations ADD COLUMN location TEXT NOT NULL DEFAULT '';
UPDATE known_locations SET
    location = json_build_object('timezone', timezone, 'latitude', latitude,
                                 'longitude', longitude, 'region', region,
                                 'postal_code', postal_code)::text,
    timezone = '', latitude = NULL, longitude = NULL, region = '', postal_code = '';
DELETE FROM settings WHERE name LIKE 'resealed-through:data-key:%'
    AND EXISTS (SELECT 1 FROM known_locations);
