"""HTTP SMS providers (Twilio-compatible today): pure protocol code shared by the
carrier-adapter and the simulators — request signatures and status/error mapping."""
