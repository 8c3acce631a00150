"""Text the services take from outside: what PostgreSQL can store, and names fit to show."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema


@dataclass(frozen=True)
class Refuse:
    """Pydantic metadata that refuses a string holding any character of `characters` (a
    regular-expression class body that Python and ECMAScript read alike) with the error type
    `code`, and documents the rule as the JSON schema's `pattern`."""

    characters: str
    code: str
    message: str

    def found_in(self, text: str) -> bool:
        return re.search(f"[{self.characters}]", text) is not None

    def _check(self, text: str) -> str:
        if self.found_in(text):
            raise PydanticCustomError(self.code, self.message)
        return text

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = f"^[^{self.characters}]*$"
        return json_schema


# PostgreSQL cannot hold U+0000 in `text` (SQLSTATE 22021) nor in `jsonb` (22P05): text that
# reaches it is refused at the edge with this error instead of failing in the database.
NO_NUL = Refuse(
    r"\u0000", "string_nul_character", "Text must not contain the NUL character (U+0000)"
)
# A name is one line shown in e-mails (greetings, headers) and pages: no control character at
# all (C0, DEL, C1), where free text such as a chat message may hold line breaks and tabs.
NO_CONTROL = Refuse(
    r"\u0000-\u001f\u007f-\u009f",
    "string_control_character",
    "Text must not contain control characters (U+0000-U+001F, U+007F-U+009F)",
)

# Constraints that change the text (strip_whitespace) go before these markers, so that what
# is checked is what is stored.
StorableText = Annotated[str, NO_NUL]
