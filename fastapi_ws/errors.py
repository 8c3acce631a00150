"""Expected failures of fastapi_ws's HTTP routes."""

from contracts.errors import ServiceError


class RoomNotFound(ServiceError):
    status_code = 404
    code = "ROOM_NOT_FOUND"
