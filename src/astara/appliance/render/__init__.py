"""Pure functions from a RouterPlan to configuration text (nftables, dnsmasq, bird)."""
