-- The cinema's content database (schema `content`) as recom's ETL reads it; shipped for the demo
-- and the tests. Idempotent: applying it again changes nothing.
--
-- Two server-side rules make the ETL exact:
-- * `modified` is always set by the server to now(), the writing transaction's start time. A
--   row can then only commit late if its transaction is still open, and the ETL never reads past
--   the start of the oldest open transaction (see fastapi_recom/etl.py), whatever clients send.
-- * Deletions are logged in `deleted_row` (row id and, for links, the film), by statement-level
--   triggers that also see rows removed by ON DELETE CASCADE.

CREATE SCHEMA IF NOT EXISTS content;

CREATE TABLE IF NOT EXISTS content.film_work (
    id uuid PRIMARY KEY,
    title text NOT NULL,
    description text,
    release_year integer,
    rating double precision,
    type text NOT NULL DEFAULT 'movie' CHECK (type IN ('movie', 'tv_show')),
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS content.genre (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    description text,
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS content.person (
    id uuid PRIMARY KEY,
    full_name text NOT NULL,
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS content.genre_film_work (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    film_work_id uuid NOT NULL REFERENCES content.film_work (id) ON DELETE CASCADE,
    genre_id uuid NOT NULL REFERENCES content.genre (id) ON DELETE CASCADE,
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now(),
    UNIQUE (film_work_id, genre_id)
);

CREATE TABLE IF NOT EXISTS content.person_film_work (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    film_work_id uuid NOT NULL REFERENCES content.film_work (id) ON DELETE CASCADE,
    person_id uuid NOT NULL REFERENCES content.person (id) ON DELETE CASCADE,
    role text NOT NULL CHECK (role IN ('actor', 'director', 'writer')),
    created timestamptz NOT NULL DEFAULT now(),
    modified timestamptz NOT NULL DEFAULT now(),
    UNIQUE (film_work_id, person_id, role)
);

CREATE TABLE IF NOT EXISTS content.deleted_row (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    table_name text NOT NULL,
    row_id uuid NOT NULL,
    film_work_id uuid,
    modified timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS genre_film_work_genre_id_idx ON content.genre_film_work (genre_id);
CREATE INDEX IF NOT EXISTS person_film_work_person_id_idx ON content.person_film_work (person_id);

-- The ETL's keyset: (modified, id) per table.
CREATE INDEX IF NOT EXISTS film_work_modified_idx ON content.film_work (modified, id);
CREATE INDEX IF NOT EXISTS genre_modified_idx ON content.genre (modified, id);
CREATE INDEX IF NOT EXISTS person_modified_idx ON content.person (modified, id);
CREATE INDEX IF NOT EXISTS genre_film_work_modified_idx ON content.genre_film_work (modified, id);
CREATE INDEX IF NOT EXISTS person_film_work_modified_idx ON content.person_film_work (modified, id);
CREATE INDEX IF NOT EXISTS deleted_row_modified_idx ON content.deleted_row (modified, id);

CREATE OR REPLACE FUNCTION content.set_modified() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.modified := now();
    RETURN NEW;
END
$$;

CREATE OR REPLACE FUNCTION content.log_deleted_rows() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- to_jsonb: one function serves tables with and without a film_work_id column.
    INSERT INTO content.deleted_row (table_name, row_id, film_work_id)
    SELECT TG_TABLE_NAME, o.id, (to_jsonb(o) ->> 'film_work_id')::uuid FROM old_rows AS o;
    RETURN NULL;
END
$$;

DO $$
DECLARE
    name text;
BEGIN
    FOREACH name IN ARRAY ARRAY['film_work', 'genre', 'person', 'genre_film_work', 'person_film_work']
    LOOP
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %1$s_modified BEFORE INSERT OR UPDATE ON content.%1$I '
            'FOR EACH ROW EXECUTE FUNCTION content.set_modified()', name);
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER %1$s_deleted AFTER DELETE ON content.%1$I '
            'REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT '
            'EXECUTE FUNCTION content.log_deleted_rows()', name);
    END LOOP;
END
$$;

CREATE OR REPLACE TRIGGER deleted_row_modified BEFORE INSERT OR UPDATE ON content.deleted_row
FOR EACH ROW EXECUTE FUNCTION content.set_modified();
