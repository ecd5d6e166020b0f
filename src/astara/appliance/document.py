"""The applied configuration as JSON text, re-serialising only what changed.

``GET /v1/system/config/``, the answer to a PUT and ``config.json`` all carry
the applied configuration. Serialising a big router's whole model takes
~5 ms per push, though incremental parsing (``api/parsing.py``) hands over
the very model objects of every unchanged network and floating IP. This
writer keeps each of those objects' JSON text and joins the pieces: the
result parses to what ``model_dump_json()`` gives (the lists come last).
"""

from __future__ import annotations

from pydantic import BaseModel

from astara.wire.appliance_v1 import ConfigurationBody

_HEAD = '{"configuration":{'
_LISTS = {"configuration": {"networks", "floating_ips"}}


class ConfigDocument:
    """Serialises successive configurations of one appliance; not thread-safe."""

    def __init__(self) -> None:
        # id -> (model, text): holding the model keeps its id from being reused
        self._texts: dict[int, tuple[BaseModel, str]] = {}

    def dump(self, body: ConfigurationBody) -> str:
        """``body`` as compact JSON text, equal in content to ``body.model_dump_json()``."""
        head = body.model_dump_json(exclude=_LISTS)
        if not head.startswith(_HEAD) or not head.endswith("}}"):  # the model grew: no shortcut
            return body.model_dump_json()
        texts: dict[int, tuple[BaseModel, str]] = {}

        def text_of(model: BaseModel) -> str:
            known = self._texts.get(id(model))
            text = known[1] if known is not None and known[0] is model else model.model_dump_json()
            texts[id(model)] = (model, text)
            return text

        configuration = body.configuration
        networks = ",".join(text_of(n) for n in configuration.networks)
        floating_ips = ",".join(text_of(f) for f in configuration.floating_ips)
        self._texts = texts  # only what the current configuration holds
        scalars = head[len(_HEAD) : -2]
        return (
            f"{_HEAD}{scalars}{',' if scalars else ''}"
            f'"networks":[{networks}],"floating_ips":[{floating_ips}]}}}}'
        )
