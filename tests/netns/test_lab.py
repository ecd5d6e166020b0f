"""The lab itself: what it builds works and goes away."""

from astara.lab import Lab


def test_veth_between_namespaces_carries_ping(lab: Lab) -> None:
    a = lab.namespace("a")
    b = lab.namespace("b")
    lab.veth(a, "eth0", b, "eth0")
    lab.address(a, "eth0", "198.51.100.1/24")
    lab.address(b, "eth0", "198.51.100.2/24")
    out = lab.run(a, ["ping", "-c1", "-W1", "198.51.100.2"])
    assert "1 received" in out


def test_close_removes_namespaces() -> None:
    with Lab("test-closecheck", link_tag="tclose") as lab:
        ns = lab.namespace("x")
        assert ns in lab.sh(["ip", "netns", "list"])
    assert "test-closecheck-x" not in lab.sh(["ip", "netns", "list"])
