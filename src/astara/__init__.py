"""Astara: network services (routing, NAT, DHCP/DNS, RAs, BGP, metadata) as real Linux appliances."""

__version__ = "0.1.0"
