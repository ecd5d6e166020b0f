"""Neutron's list semantics over resource views: filters, fields, sorting, pagination.

``ListQuery.parse`` reads the query string once (multi-valued keys allowed,
as ``?id=a&id=b``); ``apply`` runs on the views a service produced for the
caller. Filters match any attribute of the view: a value matches when its
string form equals one of the given values (booleans as ``true``/``false``);
list attributes match when they contain the value; ``fixed_ips`` takes
``ip_address=…``/``subnet_id=…``; ``tags``/``tags-any``/``not-tags``/
``not-tags-any`` follow the tag extension. Pagination is by ``marker`` (an
id) and ``limit``, with a ``next`` link while a full page came back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from astara.network.errors import BadRequest

_CONTROL = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
_TAGS = {"tags", "tags-any", "not-tags", "not-tags-any"}


@dataclass(frozen=True)
class ListQuery:
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    fields: tuple[str, ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (key, ascending)
    limit: int | None = None
    marker: str | None = None
    page_reverse: bool = False

    @classmethod
    def parse(cls, items: Iterable[tuple[str, str]]) -> ListQuery:
        values: dict[str, list[str]] = {}
        for key, value in items:
            values.setdefault(key, []).append(value)
        limit = None
        if "limit" in values:
            try:
                limit = int(values["limit"][-1])
            except ValueError:
                raise BadRequest(
                    f"Limit must be an integer 0 or greater and not '{values['limit'][-1]}'"
                ) from None
            if limit < 0:
                raise BadRequest(f"Limit must be an integer 0 or greater and not '{limit}'")
            limit = limit or None
        keys, dirs = values.get("sort_key", []), values.get("sort_dir", [])
        if dirs and len(dirs) != len(keys):
            raise BadRequest("The number of sort_keys and sort_dirs must be same")
        for direction in dirs:
            if direction not in ("asc", "desc"):
                raise BadRequest(f"{direction} is invalid attribute for sort_dir")
        sort = tuple((key, (dirs[i] if dirs else "asc") == "asc") for i, key in enumerate(keys))
        return cls(
            filters={k: tuple(v) for k, v in values.items() if k not in _CONTROL},
            fields=tuple(f for v in values.get("fields", []) for f in v.split(",") if f),
            sort=sort,
            limit=limit,
            marker=values.get("marker", [None])[-1],
            page_reverse=values.get("page_reverse", ["false"])[-1].lower() == "true",
        )

    def with_filter(self, key: str, *wanted: str) -> ListQuery:
        return ListQuery(
            {**self.filters, key: wanted},
            self.fields,
            self.sort,
            self.limit,
            self.marker,
            self.page_reverse,
        )


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _matches(view: dict[str, Any], key: str, wanted: tuple[str, ...]) -> bool:
    if key in _TAGS:
        tags = set(view.get("tags", []))
        asked = {t for w in wanted for t in w.split(",") if t}
        return {
            "tags": asked <= tags,
            "tags-any": bool(asked & tags),
            "not-tags": not asked <= tags,
            "not-tags-any": not asked & tags,
        }[key]
    if key == "fixed_ips":
        return any(_fixed_ip_matches(view.get("fixed_ips", []), w) for w in wanted)
    if key not in view:
        raise BadRequest(f"{key} is invalid attribute for filtering")
    value = view[key]
    if isinstance(value, bool):
        return any(w.lower() in (("true", "1") if value else ("false", "0")) for w in wanted)
    if isinstance(value, list):
        return any(_text(v) in wanted for v in value)
    return _text(value) in wanted or (value is None and "" in wanted)


def _fixed_ip_matches(fixed_ips: Sequence[dict[str, Any]], wanted: str) -> bool:
    field, _, value = wanted.partition("=")
    if field not in ("ip_address", "subnet_id", "ip_address_substr"):
        raise BadRequest(f"Invalid fixed_ips filter '{wanted}'")
    if field == "ip_address_substr":
        return any(value in ip["ip_address"] for ip in fixed_ips)
    return any(ip.get(field) == value for ip in fixed_ips)


def _sort_key(key: str) -> Any:
    def get(view: dict[str, Any]) -> tuple[int, Any]:
        if key not in view:
            raise BadRequest(f"{key} is invalid attribute for sort_keys")
        value = view[key]
        return (
            (0, "")
            if value is None
            else (1, value if isinstance(value, (int, float)) else _text(value))
        )

    return get


def apply(
    views: list[dict[str, Any]], query: ListQuery, *, url: str, collection: str
) -> dict[str, Any]:
    """``{"<collection>": [...], "<collection>_links": [...]}`` for ``query`` over ``views``."""
    selected = [v for v in views if all(_matches(v, k, w) for k, w in query.filters.items())]
    sort = query.sort or ((("id", True),) if query.limit or query.marker else ())
    for key, ascending in reversed(sort):
        selected.sort(key=_sort_key(key), reverse=not ascending)
    body: dict[str, Any] = {}
    links: list[dict[str, str]] = []
    if query.marker is not None:
        ids = [v["id"] for v in selected]
        if query.marker not in ids:
            raise BadRequest(f"Marker {query.marker} could not be found")
        at = ids.index(query.marker)
        selected = selected[:at] if query.page_reverse else selected[at + 1 :]
    if query.limit is not None:
        page = selected[-query.limit :] if query.page_reverse else selected[: query.limit]
        if len(page) == query.limit and len(selected) > query.limit:
            links.append(
                _link(
                    url,
                    query,
                    "next" if not query.page_reverse else "previous",
                    page[-1 if not query.page_reverse else 0]["id"],
                )
            )
        if query.marker is not None:
            links.append(
                _link(url, query, "previous", page[0]["id"] if page else query.marker, reverse=True)
            )
        selected = page
    if query.fields:
        selected = [{k: v[k] for k in query.fields if k in v} for v in selected]
    body[collection] = selected
    if links:
        body[f"{collection}_links"] = links
    return body


def _link(
    url: str, query: ListQuery, rel: str, marker: str, *, reverse: bool = False
) -> dict[str, str]:
    params: list[tuple[str, str]] = [(k, v) for k, vs in query.filters.items() for v in vs]
    params += [("fields", f) for f in query.fields]
    params += [("sort_key", k) for k, _ in query.sort]
    params += [("sort_dir", "asc" if ascending else "desc") for _, ascending in query.sort]
    params += [("limit", str(query.limit)), ("marker", marker)]
    if reverse:
        params.append(("page_reverse", "True"))
    return {"rel": rel, "href": f"{url}?{urlencode(params)}"}
