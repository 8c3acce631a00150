-- Run once by the postgres image on an empty volume (docker-compose.yml): one database per
-- service that owns one, plus the cinema's content database that recom's ETL reads.
CREATE DATABASE auth;
CREATE DATABASE recom;
CREATE DATABASE ws;
CREATE DATABASE notifications;
CREATE DATABASE content;
