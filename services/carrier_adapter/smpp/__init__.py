"""Carrier kind "smpp": an SMSC over SMPP 3.4 (config, client, how its answers become events)."""
