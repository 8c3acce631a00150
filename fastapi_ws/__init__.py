"""fastapi_ws: A personal WebSocket chat room per viewer, where picks arrive live."""
