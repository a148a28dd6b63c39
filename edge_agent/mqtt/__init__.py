"""MQTT on the host: client helpers (URLs, TLS, discovery), monitor, bridge."""
