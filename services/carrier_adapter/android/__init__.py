"""Carrier kind "android": the account's Android phones as gateways (config, phone state, the
registry of device tokens, the client the dispatcher submits through, the DeviceGatewayService
they connect to, and what lets replicas share them: directory, presence, relay)."""
