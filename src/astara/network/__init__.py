"""The network service: a Neutron v2.0-compatible API, IPAM, segmentation, L2 fabric."""
