"""Security groups and their rules: the API and storage (enforcement lives elsewhere).

Owns the ``security_groups`` and ``security_group_rules`` tables. Invariants,
as Neutron keeps them:
- every project has exactly one group named ``default``, made on first need
  (``ensure_default_group``: listing groups, creating a group, a port without
  groups) with Neutron's four rules: ingress from the group itself and egress
  to anywhere, for IPv4 and IPv6. Its id is derived from the project id
  (``default_group_id``), so the primary key refuses a concurrent twin; the
  name ``default`` is reserved for it, and its project may neither rename nor
  delete it (an admin may delete it);
- a new group starts with the two egress-anywhere rules;
- a rule is valid (direction, ethertype, protocol, ports or ICMP type/code,
  remote prefix of the rule's ethertype, one remote at most) and unique in its
  group (protocol names and numbers, and ``0.0.0.0/0``/``::/0``/none, compare
  equal); rules are never changed but for their description;
- a rule belongs to its group's project; adding or removing one bumps the
  group's revision (the group's view holds its rules);
- a group named by a port (``ports.security_groups``) cannot be deleted;
  deleting a group deletes the rules of other groups that name it as remote.
Visibility: a project sees its own groups and rules and the shared ones; an
admin sees all; only the owner (or an admin) changes them.
"""

from __future__ import annotations

import ipaddress
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import String, cast, or_, select
from sqlalchemy.orm import Session

from astara.network.attributes import Attr, Converter, boolean, one_of, string
from astara.network.context import Context
from astara.network.db.models import Port, SecurityGroup, SecurityGroupRule
from astara.network.errors import BadRequest, Conflict, InUse, NotFound
from astara.network.store import (
    apply_standard,
    bump,
    new_id,
    owner,
    standard_view,
    timestamp,
)

DEFAULT_NAME = "default"
DEFAULT_DESCRIPTION = "Default security group"
ETHERTYPES = ("IPv4", "IPv6")
#: Neutron's IP_PROTOCOL_MAP: the protocol names a rule may give, and their numbers
PROTOCOLS: dict[str, int] = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "hopopt": 0,
    "icmp": 1,
    "igmp": 2,
    "ip": 0,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "icmpv6": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
#: protocols with ports (tcp, udp, dccp, sctp, udplite) and with ICMP type/code
PORT_PROTOCOLS = (6, 17, 33, 132, 136)
ICMP_PROTOCOLS = (1, 58)
#: protocols only an IPv6 rule may name
IPV6_ONLY = (
    "ipv6-encap",
    "ipv6-frag",
    "ipv6-icmp",
    "icmpv6",
    "ipv6-nonxt",
    "ipv6-opts",
    "ipv6-route",
)
IPV6_ONLY_NUMBERS = (41, 43, 44, 58, 59, 60)
_ANY_ADDRESS = ("0.0.0.0/0", "::/0")
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "astara:network:default-security-group")


# -- the default group ------------------------------------------------------------------


def default_group_id(project_id: str) -> str:
    """The id of ``project_id``'s default group (whether or not it exists yet)."""
    return str(uuid.uuid5(_NAMESPACE, project_id))


def ensure_default_group(session: Session, project_id: str) -> str:
    """The id of the project's default group, created (with its rules) if missing.

    Runs in the caller's transaction. When a concurrent request creates the
    same group first, the flush raises IntegrityError (same primary key): the
    service retries the transaction, which then finds the group.
    """
    group_id = default_group_id(project_id)
    # an id lookup, not session.get: that would load the group's rules too (each port create)
    found = session.scalars(select(SecurityGroup.id).where(SecurityGroup.id == group_id)).first()
    if found is not None:
        return group_id
    group = SecurityGroup(
        id=group_id,
        project_id=project_id,
        name=DEFAULT_NAME,
        description=DEFAULT_DESCRIPTION,
        stateful=True,
        shared=False,
        revision_number=0,
        tags=[],
        rules=[
            _rule(project_id, direction, ethertype, remote_group_id=remote)
            for ethertype in ETHERTYPES
            for direction, remote in (("ingress", group_id), ("egress", None))
        ],
    )
    bump(group)  # the rules are part of the group: revision 1, as Neutron answers
    session.add(group)
    session.flush()  # the primary key refuses a concurrent twin here
    return group_id


def _rule(
    project_id: str, direction: str, ethertype: str, *, remote_group_id: str | None = None
) -> SecurityGroupRule:
    """One of the rules the service adds itself (no description, as in Neutron)."""
    return SecurityGroupRule(
        id=new_id(),
        project_id=project_id,
        direction=direction,
        ethertype=ethertype,
        remote_group_id=remote_group_id,
        revision_number=0,
        tags=[],
    )


# -- views ----------------------------------------------------------------------------


def _normalized(prefix: str | None) -> str | None:
    return None if prefix is None else str(ipaddress.ip_interface(prefix).network)


def rule_view(rule: SecurityGroupRule) -> dict[str, Any]:
    """A rule as Neutron shows it (``standard_attr_id`` left out: there is none here)."""
    return {
        "id": rule.id,
        "project_id": rule.project_id,
        "security_group_id": rule.security_group_id,
        "ethertype": rule.ethertype,
        "direction": rule.direction,
        "protocol": rule.protocol,
        "port_range_min": rule.port_range_min,
        "port_range_max": rule.port_range_max,
        "remote_ip_prefix": rule.remote_ip_prefix,
        "remote_address_group_id": None,
        "normalized_cidr": _normalized(rule.remote_ip_prefix),
        "remote_group_id": rule.remote_group_id,
        "belongs_to_default_sg": rule.security_group_id == default_group_id(rule.project_id),
        "description": rule.description,
        "tags": list(rule.tags),
        "created_at": timestamp(rule.created_at),
        "updated_at": timestamp(rule.updated_at),
        "revision_number": rule.revision_number,
        "tenant_id": rule.project_id,
    }


# -- lookups --------------------------------------------------------------------------


def _group_missing(group_id: str) -> NotFound:
    return NotFound(f"Security group {group_id} does not exist", type="SecurityGroupNotFound")


def _visible_group(session: Session, ctx: Context, group_id: str) -> SecurityGroup:
    group = session.get(SecurityGroup, group_id)
    if group is None or not (ctx.owns(group.project_id) or group.shared):
        raise _group_missing(group_id)
    return group


def _owned_group(session: Session, ctx: Context, group_id: str) -> SecurityGroup:
    group = session.get(SecurityGroup, group_id)
    if group is None or not ctx.owns(group.project_id):
        raise _group_missing(group_id)
    return group


def _ports_using(session: Session, group_id: str) -> list[str]:
    """Ids of the ports naming the group (a text match narrows, the list decides)."""
    candidates = session.execute(
        select(Port.id, Port.security_groups).where(
            cast(Port.security_groups, String).contains(group_id)
        )
    )
    return [port_id for port_id, groups in candidates if group_id in (groups or [])]


# -- groups ---------------------------------------------------------------------------


def _name_not_default(value: Any) -> str:
    name: str = string("name")(value)
    if name.lower() == DEFAULT_NAME:
        raise Conflict(
            "Default security group already exists.", type="SecurityGroupDefaultAlreadyExists"
        )
    return name


class SecurityGroups:
    name = "security_group"
    collection = "security_groups"
    attributes = (
        Attr("name", _name_not_default),
        Attr("description", string("description")),
        Attr("tenant_id", string("tenant_id"), put=False),
        Attr("project_id", string("project_id"), put=False),
        Attr("stateful", boolean("stateful")),
        Attr("shared", boolean("shared"), admin_only=True),
    )

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> SecurityGroup:
        project_id = owner(ctx, body)
        ensure_default_group(session, project_id)
        group = SecurityGroup(
            id=new_id(),
            project_id=project_id,
            name="",
            description="",
            stateful=body.get("stateful", True),
            shared=body.get("shared", False),
            revision_number=0,
            tags=[],
            rules=[_rule(project_id, "egress", ethertype) for ethertype in ETHERTYPES],
        )
        apply_standard(group, body)
        session.add(group)
        bump(group)  # the rules are part of the group: revision 1, as Neutron answers
        return group

    def load(self, session: Session, ctx: Context, resource_id: str) -> SecurityGroup:
        return _visible_group(session, ctx, resource_id)

    def before_list(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> None:
        """As Neutron: listing makes the (asked-for, else the caller's) project's default group.

        Runs in a write transaction of its own, before the list's read.
        """
        project = (filters.get("project_id") or filters.get("tenant_id") or (ctx.project_id,))[0]
        if ctx.owns(project):
            ensure_default_group(session, project)

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[SecurityGroup]:
        query = select(SecurityGroup).order_by(SecurityGroup.created_at, SecurityGroup.id)
        if not ctx.is_admin:
            query = query.where(
                or_(SecurityGroup.project_id == ctx.project_id, SecurityGroup.shared)
            )
        for key, column in (
            ("id", SecurityGroup.id),
            ("name", SecurityGroup.name),
            ("project_id", SecurityGroup.project_id),
            ("tenant_id", SecurityGroup.project_id),
        ):
            if key in filters:
                query = query.where(column.in_(filters[key]))
        return session.scalars(query).all()

    def update(
        self, session: Session, ctx: Context, row: SecurityGroup, body: dict[str, Any]
    ) -> None:
        if not ctx.owns(row.project_id):
            raise _group_missing(row.id)
        if row.id == default_group_id(row.project_id) and body.get("name", row.name) != row.name:
            raise Conflict(
                "Updating default security group not allowed.",
                type="SecurityGroupCannotUpdateDefault",
            )
        if body.get("stateful", row.stateful) != row.stateful and _ports_using(session, row.id):
            raise InUse(f"Security Group {row.id} in use.", type="SecurityGroupInUse")
        apply_standard(row, body)
        for key in ("stateful", "shared"):
            if key in body:
                setattr(row, key, body[key])
        bump(row)

    def delete(self, session: Session, ctx: Context, row: SecurityGroup) -> None:
        if not ctx.owns(row.project_id):
            raise _group_missing(row.id)
        if _ports_using(session, row.id):
            raise InUse(f"Security Group {row.id} in use.", type="SecurityGroupInUse")
        if row.id == default_group_id(row.project_id) and not ctx.is_admin:
            raise Conflict(
                "Insufficient rights for removing default security group.",
                type="SecurityGroupCannotRemoveDefault",
            )
        naming = session.scalars(
            select(SecurityGroupRule).where(
                SecurityGroupRule.remote_group_id == row.id,
                SecurityGroupRule.security_group_id != row.id,
            )
        )
        for rule in list(naming):
            group = rule.group
            group.rules.remove(rule)
            bump(group)
        session.delete(row)

    def view(self, row: SecurityGroup, ctx: Context) -> dict[str, Any]:
        view = standard_view(row)
        view.update(
            {
                "stateful": row.stateful,
                "shared": row.shared,
                "security_group_rules": [rule_view(r) for r in row.rules],
            }
        )
        return view


# -- rules: request values ----------------------------------------------------------------


def _ethertype(value: Any) -> str:
    if isinstance(value, str):
        for ethertype in ETHERTYPES:
            if ethertype.lower() == value.lower():
                return ethertype
    raise BadRequest(
        f"Security group rule for ethertype '{value}' not supported. "
        f"Allowed values are {list(ETHERTYPES)}.",
        type="SecurityGroupRuleInvalidEtherType",
    )


def _protocol(value: Any) -> str | None:
    """A protocol name (lower case) or number (0-255, as text); ``any`` is none."""
    if isinstance(value, str) and value.lower() in ("", "any"):
        return None
    number = _whole(value)
    if number is not None:
        if 0 <= number <= 255:
            return str(number)
    elif isinstance(value, str) and value.lower() in PROTOCOLS:
        return value.lower()
    names = ", ".join(["None", "any", *PROTOCOLS])
    raise BadRequest(
        f"Security group rule protocol {value} not supported. Only protocol values "
        f"[{names}] and integer representations [0 to 255] are supported.",
        type="SecurityGroupRuleInvalidProtocol",
    )


def _whole(value: Any) -> int | None:
    """A JSON integer, or a string of digits, as an int; None for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _port(value: Any) -> int:
    number = _whole(value)
    if number is not None and 0 <= number <= 65535:
        return number
    raise BadRequest(f"Invalid value for port {value}", type="SecurityGroupInvalidPortValue")


def _prefix(value: Any) -> str | None:
    """An address or CIDR, always with its prefix length (``10.0.0.5`` → ``10.0.0.5/32``)."""
    if value in ("", None):
        return None
    try:
        return str(ipaddress.ip_interface(str(value)))
    except ValueError:
        raise BadRequest(f"Invalid CIDR {value} given as IP prefix.", type="InvalidCIDR") from None


def _no_address_group(value: Any) -> None:
    raise NotFound(f"Address group {value} could not be found.", type="AddressGroupNotFound")


def _protocol_number(protocol: str | None) -> int | None:
    if protocol is None:
        return None
    return PROTOCOLS[protocol] if protocol in PROTOCOLS else int(protocol)


# -- rules: checks across values ------------------------------------------------------------


def _canonical(rule: dict[str, Any]) -> None:
    """IPv6 ICMP is ``ipv6-icmp`` (58), whatever legacy name or number was given."""
    if rule["ethertype"] == "IPv6":
        if rule["protocol"] in ("icmp", "icmpv6"):
            rule["protocol"] = "ipv6-icmp"
        elif rule["protocol"] == "1":
            rule["protocol"] = "58"


def _check_ports(rule: dict[str, Any]) -> None:
    low, high = rule["port_range_min"], rule["port_range_max"]
    if low is None and high is None:
        return
    number = _protocol_number(rule["protocol"])
    if number is None:
        raise BadRequest(
            "Must also specify protocol if port range is given.",
            type="SecurityGroupProtocolRequiredWithPorts",
        )
    if number in PORT_PROTOCOLS:
        if low == 0 or high == 0:
            raise BadRequest("Invalid value for port 0", type="SecurityGroupInvalidPortValue")
        if low is None or high is None or low > high:
            raise BadRequest(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max",
                type="SecurityGroupInvalidPortRange",
            )
    elif number in ICMP_PROTOCOLS:
        for key, field in (("port_range_min", "type"), ("port_range_max", "code")):
            if rule[key] is not None and not 0 <= rule[key] <= 255:
                raise BadRequest(
                    f"Invalid value for ICMP {field} ({key}) {rule[key]}. It must be 0 to 255.",
                    type="SecurityGroupInvalidIcmpValue",
                )
        if low is None:
            raise BadRequest(
                f"ICMP code (port-range-max) {high} is provided but ICMP type "
                "(port-range-min) is missing.",
                type="SecurityGroupMissingIcmpType",
            )
    else:
        raise BadRequest(
            f"Ports cannot be specified for protocol {number}. Ports are only supported "
            "for TCP, UDP, DCCP, SCTP, UDPLITE.",
            type="SecurityGroupInvalidProtocolForPort",
        )


def _check_family(rule: dict[str, Any]) -> None:
    """The remote prefix and the protocol must fit the rule's ethertype."""
    prefix, ethertype, protocol = rule["remote_ip_prefix"], rule["ethertype"], rule["protocol"]
    if prefix is not None and ethertype != f"IPv{ipaddress.ip_interface(prefix).version}":
        raise BadRequest(
            f"Conflicting value ethertype {ethertype} for CIDR {prefix}",
            type="SecurityGroupRuleParameterConflict",
        )
    ipv6_only = protocol in IPV6_ONLY or (
        protocol is not None and protocol.isdigit() and int(protocol) in IPV6_ONLY_NUMBERS
    )
    if ethertype == "IPv4" and ipv6_only:
        raise BadRequest(
            f"Invalid ethertype {ethertype} for protocol {protocol}.",
            type="SecurityGroupEthertypeConflictWithProtocol",
        )
    if prefix is not None and rule["remote_group_id"] is not None:
        raise BadRequest(
            "Only one of remote_ip_prefix or remote_group_id or remote_address_group_id "
            "may be provided.",
            type="SecurityGroupMultipleRemoteEntites",
        )


def _key(rule: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rules of a group the same rule (Neutron's comparison)."""
    prefix = rule["remote_ip_prefix"]
    remote = None if prefix is None or prefix in _ANY_ADDRESS else _normalized(prefix)
    return (
        rule["direction"],
        rule["ethertype"],
        _protocol_number(rule["protocol"]),
        rule["port_range_min"],
        rule["port_range_max"],
        rule["remote_group_id"],
        remote,
    )


def _existing_key(rule: SecurityGroupRule) -> tuple[Any, ...]:
    return _key({key: getattr(rule, key) for key in (*_OPTIONAL, "direction", "ethertype")})


def _rule_missing(rule_id: str) -> NotFound:
    return NotFound(
        f"Security group rule {rule_id} does not exist", type="SecurityGroupRuleNotFound"
    )


# -- rules ----------------------------------------------------------------------------


#: what a rule may leave out (none: any protocol, any port, any remote)
_OPTIONAL: dict[str, Converter] = {
    "protocol": _protocol,
    "port_range_min": _port,
    "port_range_max": _port,
    "remote_ip_prefix": _prefix,
    "remote_group_id": string("remote_group_id", 36),
}


class SecurityGroupRules:
    name = "security_group_rule"
    collection = "security_group_rules"
    attributes = (
        Attr("security_group_id", string("security_group_id", 36), put=False, required=True),
        Attr("direction", one_of("direction", "ingress", "egress"), put=False, required=True),
        Attr("ethertype", _ethertype, put=False),
        *(Attr(key, convert, put=False, nullable=True) for key, convert in _OPTIONAL.items()),
        Attr("remote_address_group_id", _no_address_group, put=False, nullable=True),
        Attr("description", string("description")),
        Attr("tenant_id", string("tenant_id"), put=False),
        Attr("project_id", string("project_id"), put=False),
    )

    def create(self, session: Session, ctx: Context, body: dict[str, Any]) -> SecurityGroupRule:
        owner(ctx, body)  # refuses another project's id from a non-admin
        rule = {key: body.get(key) for key in _OPTIONAL}
        rule.update(direction=body["direction"], ethertype=body.get("ethertype", "IPv4"))
        _canonical(rule)
        _check_ports(rule)
        _check_family(rule)
        if rule["remote_group_id"] is not None:
            _visible_group(session, ctx, rule["remote_group_id"])
        group = _owned_group(session, ctx, body["security_group_id"])
        # rules of one group are checked and added one transaction at a time
        session.execute(
            select(SecurityGroup.id).where(SecurityGroup.id == group.id).with_for_update()
        )
        for existing in group.rules:
            if _existing_key(existing) == _key(rule):
                raise Conflict(
                    f"Security group rule already exists. Rule id is {existing.id}.",
                    type="SecurityGroupRuleExists",
                )
        row = SecurityGroupRule(
            id=new_id(),
            project_id=group.project_id,
            description=body.get("description", ""),
            revision_number=0,
            tags=[],
            **rule,
        )
        group.rules.append(row)
        bump(group)
        return row

    def load(self, session: Session, ctx: Context, resource_id: str) -> SecurityGroupRule:
        rule = session.get(SecurityGroupRule, resource_id)
        if rule is None or not (ctx.owns(rule.project_id) or rule.group.shared):
            raise _rule_missing(resource_id)
        return rule

    def rows(
        self, session: Session, ctx: Context, filters: dict[str, tuple[str, ...]]
    ) -> Sequence[SecurityGroupRule]:
        query = select(SecurityGroupRule).order_by(
            SecurityGroupRule.created_at, SecurityGroupRule.id
        )
        if not ctx.is_admin:
            query = query.join(SecurityGroupRule.group).where(
                or_(SecurityGroupRule.project_id == ctx.project_id, SecurityGroup.shared)
            )
        for key, column in (
            ("id", SecurityGroupRule.id),
            ("security_group_id", SecurityGroupRule.security_group_id),
            ("direction", SecurityGroupRule.direction),
            ("ethertype", SecurityGroupRule.ethertype),
            ("project_id", SecurityGroupRule.project_id),
        ):
            if key in filters:
                query = query.where(column.in_(filters[key]))
        return session.scalars(query).all()

    def update(
        self, session: Session, ctx: Context, row: SecurityGroupRule, body: dict[str, Any]
    ) -> None:
        if not ctx.owns(row.project_id):
            raise _rule_missing(row.id)
        if "description" in body:  # the only attribute a rule's PUT takes
            row.description = body["description"]
        bump(row)

    def delete(self, session: Session, ctx: Context, row: SecurityGroupRule) -> None:
        if not ctx.owns(row.project_id):
            raise _rule_missing(row.id)
        group = row.group
        group.rules.remove(row)
        bump(group)

    def view(self, row: SecurityGroupRule, ctx: Context) -> dict[str, Any]:
        return rule_view(row)
