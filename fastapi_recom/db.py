"""Declarative base of fastapi_recom's own database `recom`, and the late-commit horizon."""

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from contracts.db import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# Late commits. A row stamped with its writer's clock_timestamp() (`rating.updated_at`) or
# transaction start (`content.*.modified`) but not visible yet belongs to a transaction still
# open, which started at or before that stamp. So every row stamped below the start of the
# oldest open transaction of the database was committed before this look, and no row can appear
# below it later: a reader that reads "stamp >= previous horizon" after taking the horizon in
# its own statement never skips a late commit, however long the writing transaction ran. The
# bound `clock_timestamp() - $1` covers a transaction not yet shown in pg_stat_activity. Seeing
# other sessions' transactions needs the same role as the writers or pg_read_all_stats: true of
# recom's own database, not of the content database, whose writers use a role of their own; the
# ETL takes its horizon from pg_locks instead (fastapi_recom.etl.OPEN_TRANSACTIONS).
HORIZON = """
SELECT least(
    (SELECT min(xact_start) FROM pg_stat_activity
     WHERE datname = current_database() AND backend_type = 'client backend'
       AND pid <> pg_backend_pid()),
    clock_timestamp() - make_interval(secs => $1)
), clock_timestamp()
"""
