"""Declarative base of fastapi_auth's own database `auth`."""

from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

from contracts.db import NAMING_CONVENTION


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
